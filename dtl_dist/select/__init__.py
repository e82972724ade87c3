"""Selecting samples: Kennard-Stone for the local_labelled set (paper section 2.1)."""

from dtl_dist.select.kennard_stone import kennard_stone, split_local

__all__ = ["kennard_stone", "split_local"]
