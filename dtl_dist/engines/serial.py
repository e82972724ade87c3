"""The in-process engine: run every block here, in order (the default of the algorithms)."""

from __future__ import annotations


def map_blocks(fn, blocks) -> list:
    """``[fn(block) for block in blocks]``: the ``map_blocks`` signature the algorithms take."""
    return [fn(block) for block in blocks]
