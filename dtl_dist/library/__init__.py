"""Zarr-backed spectral libraries and sites: schema, create/open/append/subset, readers, synthetic generator."""

from dtl_dist.library.store import (
    LOCAL_LABELLED,
    LOCAL_TEST,
    LibraryRef,
    LibraryWriter,
    SpectralLibrary,
    check_compatible,
    describe,
)

__all__ = [
    "LOCAL_LABELLED", "LOCAL_TEST", "LibraryRef", "LibraryWriter", "SpectralLibrary", "check_compatible", "describe",
]
