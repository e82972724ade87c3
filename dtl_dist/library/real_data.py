"""Where real spectra come from: LimeSoDa sites from the ``limesoda`` package, user files from a data folder.

The LimeSoDa field sites ship with the ``limesoda`` package, so every clone has them. Libraries a user
brings (e.g. the Geeves NSW library, ``geeves_nsw/datsoilspc.npz``) come from a folder given by path:
``--data-dir`` or the ``DTL_DATA`` environment variable. No module looks anywhere else for data.

Every store uses the grid 420-2500 nm every 10 nm (:data:`~dtl_dist.library.ingest.REAL_DATA_GRID`): UL.120
and SL.125 start at 420 nm and resampling never extrapolates. The paper's global library is not public; this
stand-in keeps its design (a library of many regions and sites, local sites as their own stores, section 2.1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dtl_dist.errors import UserInputError
from dtl_dist.library.ingest import REAL_DATA_GRID, VISNIR_SITES, Source, ingest, limesoda_source
from dtl_dist.library.store import SpectralLibrary

DATA_ENV = "DTL_DATA"
"""Environment variable naming the folder of user-provided data files."""
GEEVES = "geeves_nsw"
GEEVES_FILE = "datsoilspc.npz"


def data_dir(explicit=None) -> Path | None:
    """The user's data folder: ``explicit`` (``--data-dir``), else ``$DTL_DATA``, else None (LimeSoDa only).

    Raises
    ------
    UserInputError
        When the folder named does not exist.
    """
    where, value = ("--data-dir", explicit) if explicit is not None else (DATA_ENV, os.environ.get(DATA_ENV) or None)
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise UserInputError(f"{where}={value}: no such folder; expected a folder holding user data such as "
                             f"{GEEVES}/{GEEVES_FILE}")
    return path


def geeves_source(folder) -> Source:
    """Geeves et al. (1995) NSW/Victoria library: reflectance fraction, total carbon % (no inorganic C), AU.

    Raises
    ------
    UserInputError
        When ``folder`` lacks ``geeves_nsw/datsoilspc.npz``.
    """
    path = Path(folder) / GEEVES / GEEVES_FILE
    if not path.is_file():
        raise UserInputError(f"{folder}: no {GEEVES}/{GEEVES_FILE}; expected the Geeves NSW library there "
                             f"(unset {DATA_ENV} or --data-dir to use the LimeSoDa sites only)")
    return Source(str(path.parent), units="reflectance_fraction", name=GEEVES, country="AU", group=GEEVES)


def library_sources(sites, folder=None) -> list[Source]:
    """The real-data library's sources: Geeves NSW from ``folder`` (when given) and the LimeSoDa ``sites``."""
    sources = [geeves_source(folder)] if folder is not None else []
    return sources + [limesoda_source(site) for site in sites]


@dataclass
class RealLibrary:
    """Stores written by :func:`build_real_library` (``geeves``: whether the Geeves library is in it)."""

    library: SpectralLibrary
    sites: dict = field(default_factory=dict)
    geeves: bool = False


def build_real_library(out, *, sites=VISNIR_SITES, data_dir=None, grid: str = REAL_DATA_GRID,
                       overwrite: bool = False, progress: bool = True) -> RealLibrary:
    """Write ``out/library.zarr`` (Geeves NSW when ``data_dir`` has it + ``sites``) and ``out/sites/<id>.zarr``.

    Parameters
    ----------
    out : output folder.
    sites : LimeSoDa site ids (default the vis-NIR sites CV.98, SC.93, SL.125, UL.120).
    data_dir : folder holding ``geeves_nsw/`` (see :func:`data_dir`); None: the LimeSoDa sites only.
    grid, overwrite, progress : as in :func:`~dtl_dist.library.ingest.ingest`.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    sources = library_sources(sites, data_dir)
    site_sources = [s for s in sources if s.group != GEEVES]
    steps = tqdm(total=1 + len(site_sources), desc="real-data stores", unit=" store", disable=not progress)
    with steps:
        library = ingest(sources, out / "library.zarr", grid=grid, overwrite=overwrite)
        steps.update()
        stores = {}
        for source in site_sources:
            stores[source.name] = ingest([source], out / "sites" / f"{source.name}.zarr", grid=grid,
                                         overwrite=overwrite)
            steps.update()
    return RealLibrary(library, stores, data_dir is not None)
