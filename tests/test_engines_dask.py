"""The Dask engine: RS-LOCAL's groups as actors select the same samples on 1, 2 or 3 worker processes, on the
threads of one worker and in-process; a worker killed mid-search (with a nanny, and without one as dask-mpi and
dask-jobqueue run them) gives the same selection after a restart from the checkpoint, or, past the retries, an
error naming it; an unreachable scheduler is a clear error (issues 3, 10 and 15, paper section 2.3.2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dtl_dist.engines import dask as dask_engine
from dtl_dist.errors import UserInputError
from dtl_dist.library import SpectralLibrary
from dtl_dist.library.synthetic import write_library, write_site
from dtl_dist.select.rslocal import LocalShards, rslocal
from dtl_dist.spectra.grid import make_grid
from dtl_dist.spectra.preprocess import SNV

SEARCH = dict(k=40, subset=40, b=8, ncomp=4, seed=4, preprocess=SNV(), shard_rows=300)
"""1,500 library samples in 5 shards of 300: the groups spread over the workers, then merge."""


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    d = tmp_path_factory.mktemp("rslocal_dask")
    wl = make_grid(400, 2500, 50)
    lib = write_library(d / "lib.zarr", 1500, seed=3, wavelengths=wl)
    site = write_site(d / "site.zarr", 30, seed=4, wavelengths=wl)
    serial = rslocal(lib.spectra(), lib.target("soc"), site.spectra()[:20], site.target("soc")[:20],
                     engine=LocalShards(1), **SEARCH)
    assert serial.trace[0]["groups"] == 5
    return lib, site, serial


@pytest.fixture(scope="module")
def cluster():
    client = dask_engine.client(n_workers=3)
    yield client
    client.close()


def _run(lib: SpectralLibrary, site: SpectralLibrary, engine, **kw):
    return rslocal(lib.ref(), lib.target("soc"), site.spectra()[:20], site.target("soc")[:20], engine=engine,
                   **kw, **SEARCH)


@pytest.mark.parametrize("n_workers", [1, 2, 3])
def test_same_selection_on_any_number_of_workers(problem, cluster, n_workers):
    lib, site, serial = problem
    workers = sorted(cluster.scheduler_info()["workers"])[:n_workers]
    res = _run(lib, site, dask_engine.ShardEngine(cluster, workers=workers))
    assert np.array_equal(res.selected, serial.selected)
    assert res.trace == serial.trace and res.lost_workers == []


def test_same_selection_on_the_threads_of_one_worker_and_in_process(problem):
    lib, site, serial = problem
    with dask_engine.client(n_workers=1, threads_per_worker=3) as threaded:
        assert list(threaded.nthreads().values()) == [3]
        res = _run(lib, site, dask_engine.ShardEngine(threaded))
    assert np.array_equal(res.selected, serial.selected) and res.trace == serial.trace
    local = _run(lib, site, LocalShards(3))
    assert np.array_equal(local.selected, serial.selected) and local.trace == serial.trace


def _kill_at(iteration: int, pid: int, killed: threading.Event):
    def on_iteration(row):
        if row["iteration"] == iteration and not killed.is_set():
            killed.set()
            threading.Timer(0.02, os.kill, (pid, signal.SIGKILL)).start()
    return on_iteration


def test_a_killed_worker_restarts_from_the_checkpoint_with_the_same_selection(problem, cluster):
    lib, site, serial = problem
    pids = cluster.run(os.getpid)
    victim = sorted(pids)[0]
    killed = threading.Event()
    res = _run(lib, site, dask_engine.ShardEngine(cluster), checkpoint_every=0,
               on_iteration=_kill_at(3, pids[victim], killed))
    assert killed.is_set() and res.lost_workers == [victim]
    assert pids[victim] not in cluster.run(os.getpid).values()  # the nanny started a new worker process
    assert np.array_equal(res.selected, serial.selected) and res.trace == serial.trace


@pytest.fixture()
def no_nanny(tmp_path):
    """A scheduler and two workers without a nanny (as dask-mpi and dask-jobqueue start them), on loopback."""
    scheduler_file = tmp_path / "scheduler.json"
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "DASK_LOGGING__DISTRIBUTED": "error"}
    procs = [subprocess.Popen([bin_dir / "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", scheduler_file], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    procs += [subprocess.Popen([bin_dir / "dask", "worker", "--scheduler-file", scheduler_file, "--no-nanny",
                                "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        dask_engine.wait_for_workers(scheduler_file, 2, 60)
        with dask_engine.client(scheduler_file=scheduler_file) as client:
            yield client
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


def test_a_killed_worker_without_a_nanny(problem, no_nanny):
    """The first kill is survived on the worker left (restart from the start: no checkpoint yet); with no
    retries left, the next kill is an error naming the worker, within seconds."""
    lib, site, serial = problem
    pids = no_nanny.run(os.getpid)
    first, second = sorted(pids)
    killed = threading.Event()
    res = _run(lib, site, dask_engine.ShardEngine(no_nanny), retries=1, on_iteration=_kill_at(2, pids[first], killed))
    assert killed.is_set() and res.lost_workers == [first]
    assert sorted(no_nanny.scheduler_info()["workers"]) == [second]
    assert np.array_equal(res.selected, serial.selected) and res.trace == serial.trace
    killed.clear()
    started = time.monotonic()
    with pytest.raises(UserInputError, match=f"lost 1 workers \\({second}\\), more than the 0 retries"):
        _run(lib, site, dask_engine.ShardEngine(no_nanny), retries=0, on_iteration=_kill_at(2, pids[second], killed))
    assert time.monotonic() - started < 30


def test_unreachable_scheduler_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="cannot reach the scheduler at tcp://127.0.0.1:1"):
        dask_engine.client(address="tcp://127.0.0.1:1", timeout="1s")
    with pytest.raises(UserInputError, match="no such file"):
        dask_engine.client(scheduler_file=tmp_path / "scheduler.json")
    with pytest.raises(UserInputError, match="at most one"):
        dask_engine.client(address="tcp://127.0.0.1:1", mpi=True)
