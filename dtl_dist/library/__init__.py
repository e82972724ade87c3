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
from dtl_dist.library.ingest import REAL_DATA_GRID, VISNIR_SITES, Source, ingest, limesoda_source
from dtl_dist.library.real_data import build_real_library
from dtl_dist.library.summary import library_info, soc_statistics, summarise
from dtl_dist.library.synthetic import make_library, make_site, write_library, write_site

__all__ = [
    "LOCAL_LABELLED", "LOCAL_TEST", "LibraryRef", "LibraryWriter", "SpectralLibrary", "check_compatible", "describe",
    "REAL_DATA_GRID", "VISNIR_SITES", "Source", "ingest", "limesoda_source", "build_real_library", "library_info",
    "soc_statistics", "summarise",
    "make_library", "make_site", "write_library", "write_site",
]
