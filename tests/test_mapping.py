"""The map_blocks contract (dtl_dist.mapping): the in-process map, the Dask engine and the Ray
engine return ``fn(block, *shared)`` in block order, and the two distributed engines also send each shared object
once and retry a failing task; every map but the serial one runs torch on one thread per task, set once per
thread and never changed back. Real LocalCluster, real local Ray."""

from __future__ import annotations

import sys
from pathlib import Path

import cloudpickle
import pytest
import torch

from dtl_dist.mapping import serial_map

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this test module


class CountedPickles:
    """A shared object that counts how often the driver serialises it; it arrives on a worker as an int."""

    count = 0

    def __init__(self, value: int):
        self.value = value

    def __int__(self):
        return self.value

    def __reduce__(self):
        CountedPickles.count += 1
        return int, (self.value,)


def scaled(block, factor):
    return [x * int(factor) for x in block]


def fail_once(block, marker_dir):
    """Raise the first time a block is seen (a marker file remembers it across processes), then succeed."""
    marker = Path(marker_dir) / f"seen-{block}"
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"transient failure of block {block}")
    return block


def torch_threads(block):
    return torch.get_num_threads()


@pytest.fixture(params=["serial", "dask", "ray"])
def engine(request):
    if request.param == "serial":
        return request.param, serial_map
    if request.param == "dask":
        from dtl_dist.engines.dask import map_blocks

        return request.param, map_blocks(request.getfixturevalue("dask_client"))
    from ray import cloudpickle as ray_cloudpickle

    from dtl_dist.engines.ray import map_blocks

    ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's own copy of cloudpickle
    request.getfixturevalue("ray_session")
    return request.param, map_blocks(num_cpus=1)


def test_results_in_block_order_and_shared_objects_sent_once(engine):
    name, map_blocks = engine
    blocks = [list(range(i, i + 3)) for i in range(0, 30, 3)]
    factor = CountedPickles(7)
    CountedPickles.count = 0
    first = map_blocks(scaled, blocks, shared=(factor,))
    second = map_blocks(scaled, blocks[::-1], shared=(factor,))
    assert first == [[x * 7 for x in b] for b in blocks]
    assert second == first[::-1]
    in_process = name == "serial"
    assert CountedPickles.count == (0 if in_process else 1)  # once for both calls, not once per block
    map_blocks(scaled, blocks, shared=(CountedPickles(2),))
    assert CountedPickles.count == (0 if in_process else 2)  # a new object is sent again


def test_a_failing_task_is_retried(engine, tmp_path):
    name, map_blocks = engine
    if name == "serial":
        with pytest.raises(RuntimeError, match="transient failure of block 0"):
            map_blocks(fail_once, [0, 1], shared=(str(tmp_path),))
        return
    assert map_blocks(fail_once, [0, 1, 2, 3], shared=(str(tmp_path),)) == [0, 1, 2, 3]


def test_torch_uses_the_tasks_own_threads(engine):
    name, map_blocks = engine
    before = torch.get_num_threads()
    threads = map_blocks(torch_threads, range(4))
    if name == "serial":
        assert threads == [before] * 4
    else:
        assert threads == [1] * 4  # one torch thread per task thread (worker threads, one-CPU Ray tasks)
    assert torch.get_num_threads() == before  # the caller's threads are left as they were
