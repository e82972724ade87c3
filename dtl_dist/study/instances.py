"""The RS-LOCAL stage of a study: transfer instances from a library for every outer split (paper 2.3.2).

RS-LOCAL scores library subsets on labelled local samples, so each outer split runs it with its own local
samples only (the held-out fold never guides the selection); the final split uses all n. Runs go through the
study's Dask engine (workers read and preprocess the library themselves) or in-process. A library with no more
than k samples is not searched: all of it is used (the country libraries of small studies).

Where the library holds at least :data:`LOCALISED_POOL` x k spectra among the site's own (the coverage check's
neighbourhood, :func:`dtl_dist.study.coverage.like_site`, from the site's spectra alone, no SOC), RS-LOCAL
searches among those only. On 30 labelled samples RS-LOCAL alone fits them rather than finding the site's soils:
in a library where 25 % of the spectra are the site's soils on its spectrometer, its k selected held 30 % of them,
and as many when the other samples' SOC was shuffled (benchmarks/README.md, bench_rslocal_overfit); among the
site's neighbours they held 100 %. A library with fewer such spectra (every LimeSoDa study) is searched whole, as
in the paper; so is one larger than ``--in-memory-max`` (its spectra are not all read here).

Outputs in the stage directory: ``selected_<split>.npy`` (library rows per split, kept as they finish, so a
killed stage resumes), ``selected.csv`` (the final split's samples), ``trace.csv`` and ``trace.png`` (the final
split's search).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dtl_dist.library.atomic import atomic_path
from dtl_dist.select.rslocal import rslocal
from dtl_dist.spectra.preprocess import SNV
from dtl_dist.study.context import StudyContext
from dtl_dist.study.coverage import like_site
from dtl_dist.study.data import Source
from dtl_dist.study.rslocal_stage import write_selection, write_trace


LOCALISED_POOL = 10
"""RS-LOCAL searches the library spectra among the site's when there are at least this many times k of them."""


def search_pool(ctx: StudyContext, source: Source) -> np.ndarray | None:
    """The library rows RS-LOCAL searches: those among the site's spectra when there are enough (module
    docstring), else None (the whole library)."""
    if not source.in_memory:
        return None
    site = np.vstack([ctx.data.local_X, SNV().fit_transform(ctx.data.test_absorbance)]) if len(ctx.data.test_ids) \
        else ctx.data.local_X
    near = np.flatnonzero(like_site(source.spectra(), site))
    return near if near.size >= LOCALISED_POOL * ctx.config.k else None


def selections(directory: Path, n_splits: int) -> list[np.ndarray]:
    """The library rows selected for each split, as the stage saved them."""
    return [np.load(directory / f"selected_{s}.npy") for s in range(n_splits)]


def rslocal_stage(ctx: StudyContext, source: Source, directory: Path) -> dict:
    """Run RS-LOCAL on ``source`` for every split; returns the selection sizes (see the module docstring)."""
    config, data = ctx.config, ctx.data
    if source.size <= config.k:
        for s in range(data.n_splits):
            _save(directory / f"selected_{s}.npy", np.arange(source.size))
        write_selection(directory, source.view, np.arange(source.size), source.y, config.k, config.target)
        return {"library": source.name, "n_selected": [source.size] * data.n_splits, "searched": False,
                "note": f"{source.name} library has {source.size} <= k = {config.k} samples: RS-LOCAL skipped, all "
                        "of it is used"}
    pool = search_pool(ctx, source)
    view = source.view if pool is None else source.view.subset(index=pool)
    library = view.ref()  # workers (or this process) read and preprocess it themselves
    for s in range(data.n_splits):
        path = directory / f"selected_{s}.npy"
        if path.is_file():
            continue
        train, _ = data.local_split(s)
        result = rslocal(library, source.y if pool is None else source.y[pool], data.local_absorbance[train],
                         data.local_y[train], k=config.k, subset=config.subset, b=config.b, retain=config.retain,
                         ncomp=config.ncomp, seed=config.seed, preprocess=SNV(), engine=ctx.rslocal_engine)
        if s == data.n_outer:
            write_trace(directory, result.trace, "rmse")
        _save(path, np.sort(result.selected if pool is None else pool[result.selected]))
    final = np.load(directory / f"selected_{data.n_outer}.npy")
    write_selection(directory, source.view, final, source.y[final], config.k, config.target)
    sizes = [int(np.load(directory / f"selected_{s}.npy").size) for s in range(data.n_splits)]
    return {"library": source.name, "n_selected": sizes, "searched": True,
            "pool": source.size if pool is None else int(pool.size),
            "note": "" if pool is None else f"RS-LOCAL searched the {pool.size} {source.name} library spectra among "
                                            f"the site's (at least {LOCALISED_POOL} k of them)"}


def _save(path: Path, rows: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, rows.astype(np.int64))
