"""The RS-LOCAL stage: transfer instances from a library store to a site store (paper section 2.3.2).

Reads the library and the site (its Kennard-Stone split from ``dtl select-local``), checks that they share
grid, units and preprocessing, runs :func:`dtl_dist.select.rslocal` in-process or on Dask, and writes
into the output directory:

``selected.csv``      the selected library samples (sample_id, row, target), after a ``# n_selected=...`` line
``trace.csv/.png``    per iteration: |K|, subsets, dropped, subset score quantiles
``localised.zarr``    the k + n localised store (selected library samples + the n local_labelled)
``baseline.json``     n_selected (= k_requested), RS-LOCAL-PLS (PLSR on k + n,
                      components by 10-fold CV) and local PLS (on the n) evaluated on the site's local_test
``predictions.csv``   their estimates for each local_test sample beside the observed value
``config.json``       the configuration that made them
``checkpoint.npz``    the search state at the last checkpoint (every ``--checkpoint-every`` seconds and at the
                      end; ``--resume`` continues from it)

Every file is written to a temporary path and renamed; bad input is reported before anything is written.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dtl_dist.errors import UserInputError
from dtl_dist.library.atomic import atomic_path, remove_path, write_json, write_text
from dtl_dist.library.store import SpectralLibrary, check_compatible
from dtl_dist.linear.pls_kernel import pls1_cv_ncomp, pls1_fit_predict
from dtl_dist.metrics import evaluate
from dtl_dist.select.rslocal import LocalShards, RSLocalState, check_inputs, rslocal
from dtl_dist.select.shards import SHARD_ROWS
from dtl_dist.spectra.preprocess import paper_preprocessing
from dtl_dist.study.figures import FIGURE_LOCK

CHECKPOINT = "checkpoint.npz"
SEARCH_KEYS = ("library", "site", "target", "k", "subset", "b", "retain", "ncomp", "criterion", "seed", "dtype",
               "strict", "shard_rows")
"""Config fields that determine the selection: a checkpoint resumes only under the same values."""


@dataclass(frozen=True)
class RSLocalConfig:
    """Options of ``dtl rslocal`` (see :func:`dtl_dist.select.rslocal` for the search parameters)."""

    library: str
    site: str
    out: str
    k: int = 100
    subset: int = 100
    b: int = 40
    retain: float = 0.95
    ncomp: int = 10
    criterion: str = "rmse"
    seed: int = 0
    target: str = "soc"
    dtype: str = "float32"
    shard_rows: int = SHARD_ROWS
    checkpoint_every: float = 30.0
    retries: int = 2
    strict: bool = False
    resume: bool = False
    baseline_max_ncomp: int = 20
    folds: int = 10
    workers: int = 0
    scheduler_file: str | None = None
    address: str | None = None
    mpi: bool = False
    connect_timeout: str = "10s"
    threads: int | None = None
    jobqueue: str | None = None
    interface: str | None = None


@dataclass(frozen=True)
class Inputs:
    library: SpectralLibrary
    library_y: np.ndarray
    labelled: SpectralLibrary
    test: SpectralLibrary
    local_X: np.ndarray
    local_y: np.ndarray
    n_skipped: int


def _load(config: RSLocalConfig) -> Inputs:
    library = SpectralLibrary.open(config.library)
    site = SpectralLibrary.open(config.site)
    check_compatible(library, site, what=f"site {config.site}")
    labelled, test = site.split()
    library_y = library.target(config.target)
    n_nan = int(np.isnan(library_y).sum())
    if n_nan and config.strict:
        raise UserInputError(f"{config.library}: {n_nan} samples have no {config.target} value (NaN); "
                             "drop --strict to skip them")
    local_y = labelled.target(config.target) if config.target in labelled.targets else None
    return Inputs(library, library_y, labelled, test, labelled.spectra(), local_y, n_nan)


def _open_out(config: RSLocalConfig) -> RSLocalState | None:
    """Check the output directory; return the checkpointed state when resuming."""
    out = Path(config.out)
    if not out.exists() or not any(out.iterdir()):
        if config.resume:
            raise UserInputError(f"--out {out}: nothing to resume (no {CHECKPOINT})")
        return None
    if not config.resume:
        raise UserInputError(f"--out {out}: directory exists and is not empty; pass --resume to continue a run "
                             "or choose another --out")
    if not (out / CHECKPOINT).is_file():
        raise UserInputError(f"--out {out}: no {CHECKPOINT} to resume from")
    with np.load(out / CHECKPOINT) as ck:
        saved = json.loads(str(ck["meta"]))
        groups = {int(name.removeprefix("group_")): ck[name].astype(np.int64) for name in ck.files
                  if name.startswith("group_")}
        state = RSLocalState(iteration=saved["iteration"], groups=groups, trace=saved["trace"])
    mine = {key: getattr(config, key) for key in SEARCH_KEYS}
    changed = sorted(key for key in SEARCH_KEYS if saved["search"].get(key) != mine[key])
    if changed:
        raise UserInputError(f"--resume: {', '.join(changed)} differ from the checkpoint in {out}; "
                             "use the same options or another --out")
    return state


def _save_checkpoint(out: Path, config: RSLocalConfig, state: RSLocalState) -> None:
    meta = {"iteration": state.iteration, "trace": state.trace,
            "search": {key: getattr(config, key) for key in SEARCH_KEYS}}
    with atomic_path(out / CHECKPOINT) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(meta)),
                     **{f"group_{g}": rows.astype(np.int64) for g, rows in state.groups.items()})


def _engine(config: RSLocalConfig):
    """(engine, client): in this process on ``threads`` threads (default: its CPUs) unless a Dask deployment
    is asked for (or mpiexec started us)."""
    from dtl_dist.engines import dask as dask_engine

    wants_dask = (config.workers > 0 or config.scheduler_file or config.address or config.mpi or config.jobqueue
                  or dask_engine.under_mpiexec())
    if not wants_dask:
        return LocalShards(config.threads), None
    client = dask_engine.client(scheduler_file=config.scheduler_file, address=config.address, mpi=config.mpi,
                                n_workers=config.workers or None, threads_per_worker=config.threads or 1,
                                jobqueue=config.jobqueue, timeout=config.connect_timeout, interface=config.interface)
    return dask_engine.ShardEngine(client), client


def _pls_baseline(X, y, X_test, y_test, *, max_ncomp: int, folds: int, seed: int) -> tuple[dict, np.ndarray]:
    """PLSR with the number of components chosen by ``folds``-fold CV; its local_test metrics and estimates."""
    folds = min(folds, len(y))
    max_ncomp = max(1, min(max_ncomp, len(y) - -(-len(y) // folds) - 1, X.shape[1]))
    best, cv_rmse = pls1_cv_ncomp(X, y, max_ncomp, folds=folds, seed=seed, dtype="float64")
    pred = pls1_fit_predict(X[None], y[None], X_test, best, dtype="float64")[0]
    return {"n_train": int(len(y)), "ncomp": best, "cv_rmse": float(cv_rmse[best - 1]),
            "test": evaluate(y_test, pred)}, pred


def write_trace_png(path: Path, trace: list, criterion: str) -> None:
    """Subset score quantiles and |K| per iteration (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [row["iteration"] for row in trace]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.fill_between(it, [r["score_q05"] for r in trace], [r["score_q95"] for r in trace], alpha=0.3,
                    label="subset score 5-95 %")
    ax.plot(it, [r["score_q50"] for r in trace], label="subset score median")
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"subset {criterion}")
    ax2 = ax.twinx()
    ax2.semilogy(it, [r["pool_size"] for r in trace], color="k", ls="--", label="|K|")
    ax2.set_ylabel("|K| (active pool)")
    fig.legend(loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_selection(out: Path, library, rows: np.ndarray, y: np.ndarray, k: int, target: str = "soc") -> None:
    """``selected.csv``: a ``# n_selected=... k_requested=...`` line, then sample_id, row and target of each
    selected library sample (``rows`` of ``library``, ``y`` their targets)."""
    ids = library.sample_id[rows] if len(rows) else np.array([], dtype=str)
    lines = [f"# n_selected={len(rows)} k_requested={k}", f"sample_id,row,{target}"]
    lines += [f"{i},{r},{float(v)!r}" for i, r, v in zip(ids, rows, y)]
    write_text(out / "selected.csv", "\n".join(lines) + "\n")


def write_trace(out: Path, trace: list, criterion: str) -> None:
    """``trace.csv`` (one row per iteration) and ``trace.png`` of a search."""
    keys = list(trace[0]) if trace else ["iteration", "pool_size"]
    rows = [",".join(keys)] + [",".join(repr(row[k]) for k in keys) for row in trace]
    write_text(out / "trace.csv", "\n".join(rows) + "\n")
    if trace:
        with FIGURE_LOCK:
            write_trace_png(out / "trace.png", trace, criterion)


def _write_outputs(out: Path, config: RSLocalConfig, inputs: Inputs, result, preprocess) -> dict:
    selected = np.sort(result.selected)
    lib = inputs.library
    y_sel = inputs.library_y[selected]
    write_selection(out, lib, selected, y_sel, config.k, config.target)
    write_trace(out, result.trace, config.criterion)
    lib.subset(index=selected).save(out / "localised.zarr", overwrite=True, extra=inputs.labelled, provenance={
        "stage": "rslocal", "library": str(config.library), "site": str(config.site), "n_selected": len(selected),
        "n": inputs.labelled.n_samples})

    baseline = {"site": str(config.site), "library": str(config.library), "n_selected": int(len(selected)),
                "k_requested": config.k, "n": int(inputs.labelled.n_samples), "iterations": result.n_iterations,
                "library_skipped_nan": inputs.n_skipped, "lost_workers": result.lost_workers, **result.timings}
    test_y = inputs.test.target(config.target) if config.target in inputs.test.targets else None
    if inputs.local_y is not None and test_y is not None and inputs.test.n_samples >= 2:
        measured = np.isfinite(test_y)
        X_test = preprocess.fit_transform(inputs.test.spectra(np.flatnonzero(measured)))
        X_local = preprocess.fit_transform(inputs.local_X)
        X_k = preprocess.fit_transform(lib.spectra(selected))
        kw = {"max_ncomp": config.baseline_max_ncomp, "folds": config.folds, "seed": config.seed}
        baseline["rslocal_pls"], rslocal_pred = _pls_baseline(
            np.vstack([X_k, X_local]), np.concatenate([y_sel, inputs.local_y]), X_test, test_y[measured], **kw)
        baseline["local_pls"], local_pred = _pls_baseline(X_local, inputs.local_y, X_test, test_y[measured], **kw)
        table = ["sample_id,observed,local_pls,rslocal_pls"] + [
            f"{i},{o!r},{a!r},{b!r}" for i, o, a, b in zip(inputs.test.sample_id[measured], test_y[measured].tolist(),
                                                         local_pred.tolist(), rslocal_pred.tolist())]
        write_text(out / "predictions.csv", "\n".join(table) + "\n")
    write_json(out / "baseline.json", baseline)
    return baseline


def run_rslocal(config: RSLocalConfig, *, echo: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Run the RS-LOCAL stage (paper section 2.3.2) and write its outputs into ``config.out``.

    Returns
    -------
    dict
        The contents of ``baseline.json`` (selection size, stop reason, RS-LOCAL-PLS and local PLS
        test metrics).
    """
    inputs = _load(config)
    check_inputs(inputs.local_X, inputs.local_y, k=config.k, subset=config.subset, b=config.b,
                 retain=config.retain, ncomp=config.ncomp, criterion=config.criterion,
                 n_valid=int(np.isfinite(inputs.library_y).sum()), dtype=config.dtype, shard_rows=config.shard_rows)
    state = _open_out(config)
    out = Path(config.out)
    fresh = not out.exists()
    engine, client = _engine(config)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", asdict(config))
        if inputs.n_skipped:
            echo(f"{config.library}: skipping {inputs.n_skipped} library samples without {config.target} (NaN)")
        preprocess = paper_preprocessing(inputs.library.units)
        bar = _progress_bar(progress, state)

        last = [time.monotonic(), time.monotonic()]  # last line written, end of the previous iteration

        def on_iteration(row: dict) -> None:
            now = time.monotonic()
            if bar is not None and not bar.disable:
                bar.update(1)
                bar.set_postfix(pool=row["pool_size"] - row["dropped"], groups=row["groups"])
            elif progress and (now - last[0] >= 60 or row["iteration"] == 1):  # a job log: a line a minute
                echo(f"rslocal: iteration {row['iteration']}, pool {row['pool_size'] - row['dropped']:,} in "
                     f"{row['groups']} groups, {row['n_subsets']:,} subsets in {now - last[1]:.1f} s")
                last[0] = now
            last[1] = now

        try:
            result = rslocal(inputs.library.ref(), inputs.library_y, inputs.local_X, inputs.local_y, k=config.k,
                             subset=config.subset, b=config.b, retain=config.retain, ncomp=config.ncomp,
                             criterion=config.criterion, seed=config.seed, preprocess=preprocess,
                             dtype=config.dtype, shard_rows=config.shard_rows, engine=engine, state=state,
                             on_iteration=on_iteration, on_checkpoint=lambda s: _save_checkpoint(out, config, s),
                             checkpoint_every=config.checkpoint_every, retries=config.retries)
        finally:
            if bar is not None:
                bar.close()
        return _write_outputs(out, config, inputs, result, preprocess)
    except UserInputError:  # e.g. a damaged library chunk met by a shard reader: a fresh run leaves nothing
        if fresh:
            remove_path(out)
        raise
    finally:
        if client is not None:
            client.close()


def _progress_bar(progress: bool, state: RSLocalState | None):
    if not progress:
        return None
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (a job log)
    return tqdm(desc="rslocal", unit="iteration", initial=state.iteration if state else 0, leave=False, disable=None)
