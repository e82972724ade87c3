"""The 1D-CNN search stage (paper section 2.3.1): a store in, a results table, best config and model out.

``run_tune(store, out)`` reads a spectral library or site store (e.g. the k + n localised data), applies
the paper's preprocessing (SNV on the stored absorbance, section 2.2), searches the 1D-CNN space with Ray
Tune (:class:`dtl_dist.engines.ray.TuneRunner`) and writes into ``out``::

    ray/search/          the Tune experiment (trial results, checkpoints, searcher state: what --resume reads)
    trials.csv           every trial: config, CV RMSE, fold spread, epochs, time, status (+ reason)
    trials.parquet       the same table
    best_config.json     the best complete trial: its flat params, CNN config, train config and RMSE
    model/               the best trial's fold ensemble (:mod:`dtl_dist.nn.model_dir`), loads without Ray

Each output file is written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from dtl_dist.errors import UserInputError
from dtl_dist.library import SpectralLibrary
from dtl_dist.library.atomic import atomic_path, write_json
from dtl_dist.nn.search import SearchResult, TuneData, tune
from dtl_dist.nn.space import SearchSpace, default_space
from dtl_dist.spectra.preprocess import SNV

EXPERIMENT = "search"


def load_tune_data(store, *, target: str = "soc", folds: int = 10, seed: int = 0) -> TuneData:
    """Spectra of ``store`` as SNV(absorbance), its ``target`` and the seeded folds."""
    lib = SpectralLibrary.open(store)
    if lib.units != "absorbance":
        raise UserInputError(f"{store}: spectra are in {lib.units}; expected absorbance (ingest converts)")
    X = SNV().fit_transform(lib.spectra())
    return TuneData.make(X, lib.target(target), folds=folds, seed=seed, wavelengths=lib.wavelengths,
                         preprocessing=("snv",), input_units="absorbance", source=str(Path(store).resolve()))


def write_outputs(result: SearchResult, out: Path, space: SearchSpace, seed: int) -> None:
    """Results table (CSV + Parquet), best config and best model directory, each atomically."""
    table = result.table()
    with atomic_path(out / "trials.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out / "trials.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    best = result.best
    if best is None:
        return
    cnn, train = space.to_config(best.params, seed=seed)
    write_json(out / "best_config.json", {
        "trial_id": best.trial_id, "rmse": best.rmse, "rmse_std": best.rmse_std, "epochs": best.epochs,
        "params": best.params, "cnn_config": cnn.to_dict(), "train_config": train.to_dict(),
    })
    with atomic_path(out / "model") as tmp:
        shutil.copytree(result.best_model_dir(), tmp)


def run_tune(store, out, *, trials: int = 200, folds: int = 10, seed: int = 0, target: str = "soc",
             space: SearchSpace | None = None, cpus_per_trial: float = 1, gpus_per_trial: float = 0,
             cpu_fallback: bool = False, max_concurrent: int | None = None, address: str | None = None,
             resume: bool = False, mode: str = "vectorised", grace_period: int = 10,
             progress: bool = True) -> SearchResult:
    """Search the 1D-CNN for ``store`` and write the outputs to ``out`` (see the module docstring).

    Parameters
    ----------
    store : spectral library or site store (absorbance).
    out : output directory.
    trials, folds, seed : number of configs, cross-validation folds and seed (folds, sampler and weights).
    target : target property.
    space : search space (default :func:`~dtl_dist.nn.space.default_space`).
    cpus_per_trial, gpus_per_trial : resources of each trial (fractional GPUs share a device).
    cpu_fallback : train on CPU when GPUs are requested but none exist.
    max_concurrent : trials at once (default: as resources allow).
    address : Ray cluster to join (default: a local Ray runtime).
    resume : continue the interrupted search in ``out``.
    mode : fold training mode ("vectorised" or "sequential").
    grace_period : epochs before ASHA may stop a trial.
    progress : print trials done / best RMSE as trials finish.
    """
    from dtl_dist.engines.ray import TuneRunner

    out = Path(out)
    data = load_tune_data(store, target=target, folds=folds, seed=seed)
    space = space or default_space()
    runner = TuneRunner(out / "ray", name=EXPERIMENT, address=address, cpus_per_trial=cpus_per_trial,
                        gpus_per_trial=gpus_per_trial, allow_cpu_fallback=cpu_fallback,
                        max_concurrent=max_concurrent, resume=resume, progress=progress,
                        warn=lambda line: print(line, file=sys.stderr))
    result = tune(data, space, trials=trials, runner=runner, seed=seed, grace_period=grace_period, mode=mode)
    write_outputs(result, out, space, seed)
    return result
