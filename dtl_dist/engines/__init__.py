"""Engines: the only place that knows about clusters. Each supplies a ``map_blocks(fn, blocks) -> list``."""

from dtl_dist.engines import serial

__all__ = ["serial"]
