"""The ``map_blocks`` contract between algorithms and engines (ARCHITECTURE: algorithms never know who runs).

An algorithm with parallel work takes ``map_blocks(fn, blocks, shared=()) -> list`` that returns
``[fn(block, *shared) for block in blocks]`` in block order; ``shared`` holds objects every block needs (sent
to each worker once by the distributed engines). :func:`serial_map` is the in-process default;
:mod:`dtl_dist.engines.dask` and :mod:`dtl_dist.engines.ray` supply distributed ones.
"""

from __future__ import annotations

from typing import Callable


def serial_map(fn: Callable, blocks, shared=()) -> list:
    """Run every block here, in order."""
    return [fn(block, *shared) for block in blocks]
