"""Selecting samples: Kennard-Stone for the local_labelled set (paper section 2.1) and RS-LOCAL-v2.0 for
the library samples transferred to a site (section 2.3.2)."""

from dtl_dist.select.kennard_stone import kennard_stone, split_local
from dtl_dist.select.rslocal import CRITERIA, RSLocalResult, RSLocalState, rslocal

__all__ = ["CRITERIA", "RSLocalResult", "RSLocalState", "kennard_stone", "rslocal", "split_local"]
