"""The ``map_blocks`` contract between algorithms and engines (ARCHITECTURE: algorithms never know who runs).

An algorithm with parallel work takes ``map_blocks(fn, blocks, shared=()) -> list`` that returns
``[fn(block, *shared) for block in blocks]`` in block order; ``shared`` holds objects every block needs.
:func:`serial_map` is the in-process map; :mod:`dtl_dist.engines.dask` and
:mod:`dtl_dist.engines.ray` supply distributed ones, which also promise: each shared object is sent to the
cluster once (and reused by later calls given the same object), a failed task is retried, and torch in a task
uses only the task's threads (:func:`with_torch_threads`).

A distributed map whose block was lost past its retries (its worker or node died every time) raises
:class:`BlocksLost`, which carries the results of the other blocks, so an algorithm whose blocks are
independent (a search's trials) can record the lost ones as failed and keep the rest.

Torch threads. ``torch.set_num_threads`` sets the calling thread's OpenMP team size and the process-wide
default that threads take at their first torch operation. A task thread therefore sets its count once, the
first time it runs a task (reading the count first, so a later change of the default cannot reach it), and
never changes it back: a thread pool whose tasks toggled the count would let one task's restore reach
another task mid-computation.
"""

from __future__ import annotations

import sys
from typing import Callable


class BlocksLost(RuntimeError):
    """Blocks of a distributed map that no worker finished: ``results`` in block order (None where lost) and
    ``lost``: block index -> why (the engine's error, naming the worker or node)."""

    def __init__(self, results: list, lost: dict):
        self.results, self.lost = results, lost
        first = next(iter(lost.values()))
        super().__init__(f"{len(lost)} of {len(results)} blocks lost past their retries; first: {first}")


def serial_map(fn: Callable, blocks, shared=()) -> list:
    """Run every block here, in order (torch with the caller's own threads)."""
    return [fn(block, *shared) for block in blocks]


def with_torch_threads(fn: Callable, threads: int, *args):
    """Call ``fn(*args)`` with torch limited to ``threads`` intra-op threads in this thread (if the task uses
    torch), so that tasks sharing a node do not oversubscribe it; the count stays set for the thread's later
    tasks (see the module notes)."""
    torch = sys.modules.get("torch")  # imported with fn's module, if fn uses it
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return fn(*args)
