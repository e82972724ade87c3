"""The RS-LOCAL stage of a study: transfer instances from a library for every outer split (paper 2.3.2).

RS-LOCAL scores library subsets on labelled local samples, so each outer split runs it with its own local
samples only (the held-out fold never guides the selection); the final split uses all n. Runs go through the
study's Dask engine (workers read and preprocess the library themselves) or in-process. A library with no more
than k samples is not searched: all of it is used (the country libraries of small studies).

Where the library holds at least :data:`LOCALISED_POOL` x k spectra among the site's own (its neighbourhood:
the coverage check's :func:`dtl_dist.study.coverage.like_site`, from the site's spectra alone, no SOC), all of
them are the localised data and RS-LOCAL does not run. On 30 labelled samples RS-LOCAL fits them rather than
finding the site's soils: in a library where 25 % of the spectra are the site's soils on its spectrometer, its k
selected held 30 % of them, and as many when the other samples' SOC was shuffled; searching among the site's
neighbours only, its k did no better than k drawn at random from them, and PLS on all of them did best
(benchmarks/README.md, bench_rslocal_overfit). A library with fewer such spectra (every LimeSoDa study: at most
15) is searched whole, as in the paper; so is one larger than ``--in-memory-max`` (its spectra are not all read
here).

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
"""The library spectra among the site's are the localised data when there are at least this many times k."""


def neighbourhood(ctx: StudyContext, source: Source) -> np.ndarray | None:
    """The library rows among the site's spectra when there are enough of them (module docstring), else None
    (RS-LOCAL searches the whole library)."""
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
        return _use_all(directory, source, np.arange(source.size), data.n_splits, config,
                        f"{source.name} library has {source.size} <= k = {config.k} samples: RS-LOCAL skipped, all of "
                        "it is used")
    near = neighbourhood(ctx, source)
    if near is not None:
        return _use_all(directory, source, near, data.n_splits, config,
                        f"{source.name} library holds {near.size} spectra among the site's (at least "
                        f"{LOCALISED_POOL} k): all of them are the localised data, RS-LOCAL skipped")
    library = source.view.ref()  # workers (or this process) read and preprocess it themselves
    for s in range(data.n_splits):
        path = directory / f"selected_{s}.npy"
        if path.is_file():
            continue
        train, _ = data.local_split(s)
        result = rslocal(library, source.y, data.local_absorbance[train], data.local_y[train], k=config.k,
                         subset=config.subset, b=config.b, retain=config.retain, ncomp=config.ncomp, seed=config.seed,
                         preprocess=SNV(), engine=ctx.rslocal_engine)
        if s == data.n_outer:
            write_trace(directory, result.trace, "rmse")
        _save(path, np.sort(result.selected))
    final = np.load(directory / f"selected_{data.n_outer}.npy")
    write_selection(directory, source.view, final, source.y[final], config.k, config.target)
    sizes = [int(np.load(directory / f"selected_{s}.npy").size) for s in range(data.n_splits)]
    return {"library": source.name, "n_selected": sizes, "searched": True, "note": ""}


def _use_all(directory: Path, source: Source, rows: np.ndarray, n_splits: int, config, note: str) -> dict:
    """``rows`` of ``source`` are every split's localised data, without a search."""
    for s in range(n_splits):
        _save(directory / f"selected_{s}.npy", rows)
    write_selection(directory, source.view, rows, source.y[rows], config.k, config.target)
    return {"library": source.name, "n_selected": [int(rows.size)] * n_splits, "searched": False, "note": note}


def _save(path: Path, rows: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, rows.astype(np.int64))
