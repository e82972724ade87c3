"""The ``map_blocks`` contract between algorithms and engines (ARCHITECTURE: algorithms never know who runs).

An algorithm with parallel work takes ``map_blocks(fn, blocks, shared=()) -> list`` that returns
``[fn(block, *shared) for block in blocks]`` in block order; ``shared`` holds objects every block needs.
:func:`serial_map` is the in-process default; :mod:`dtl_dist.engines.dask` and :mod:`dtl_dist.engines.ray`
supply distributed ones, which also promise: each shared object is sent to the cluster once (and reused by
later calls given the same object), a failed task is retried, and torch in a task uses only the task's
threads (:func:`with_torch_threads`).
"""

from __future__ import annotations

import sys
from typing import Callable


def serial_map(fn: Callable, blocks, shared=()) -> list:
    """Run every block here, in order."""
    return [fn(block, *shared) for block in blocks]


def with_torch_threads(fn: Callable, threads: int, *args):
    """Call ``fn(*args)`` with torch limited to ``threads`` intra-op threads (if the task uses torch), so that
    workers sharing a node do not oversubscribe it."""
    torch = sys.modules.get("torch")  # imported with fn's module, if fn uses it
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return fn(*args)
