"""The real-data library of this project: Geeves NSW (AU) plus the LimeSoDa vis-NIR sites, and each site alone.

Every store uses the grid 420-2500 nm every 10 nm (:data:`~dtl_dist.library.ingest.REAL_DATA_GRID`): UL.120
and SL.125 start at 420 nm and resampling never extrapolates. The paper's global library is not public; this
stand-in keeps its design (a library of many regions and sites, local sites as their own stores, section 2.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dtl_dist.library.ingest import REAL_DATA_GRID, VISNIR_SITES, Source, ingest, limesoda_source
from dtl_dist.library.store import SpectralLibrary

GEEVES = "geeves_nsw"


def default_data_dir() -> Path:
    """``../shared/data`` beside the repository (the offline copies of the real data)."""
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def geeves_source(data_dir) -> Source:
    """Geeves et al. (1995) NSW/Victoria library: reflectance fraction, total carbon % (no inorganic C), AU."""
    return Source(str(Path(data_dir) / GEEVES), units="reflectance_fraction", name=GEEVES, country="AU",
                  group=GEEVES)


@dataclass
class RealLibrary:
    """Paths written by :func:`build_real_library` (``skipped`` names sources whose files were absent)."""

    library: SpectralLibrary
    sites: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)


def build_real_library(out, *, sites=VISNIR_SITES, data_dir=None, grid: str = REAL_DATA_GRID,
                       overwrite: bool = False, progress: bool = True) -> RealLibrary:
    """Write ``out/library.zarr`` (Geeves NSW + ``sites``) and ``out/sites/<id>.zarr`` (one store per site).

    Parameters
    ----------
    out : output folder.
    sites : LimeSoDa site ids (default the vis-NIR sites CV.98, SC.93, SL.125, UL.120).
    data_dir : folder holding ``geeves_nsw/`` (default ``../shared/data``); if it is absent the library holds
        the LimeSoDa sites only, and ``skipped`` says so.
    grid, overwrite, progress : as in :func:`~dtl_dist.library.ingest.ingest`.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    sources, skipped = [], []
    if (data_dir / GEEVES).is_dir():
        sources.append(geeves_source(data_dir))
    else:
        skipped.append(str(data_dir / GEEVES))
    site_sources = [limesoda_source(site) for site in sites]
    steps = tqdm(total=1 + len(site_sources), desc="real-data stores", unit=" store", disable=not progress)
    with steps:
        library = ingest(sources + site_sources, out / "library.zarr", grid=grid, overwrite=overwrite)
        steps.update()
        stores = {}
        for source in site_sources:
            stores[source.name] = ingest([source], out / "sites" / f"{source.name}.zarr", grid=grid,
                                         overwrite=overwrite)
            steps.update()
    return RealLibrary(library, stores, skipped)
