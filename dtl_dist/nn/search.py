"""Automated 1D-CNN search: hundreds of trials, each a 10-fold cross-validated config (paper section 2.3.1).

The paper optimises every 1D-CNN with the framework of Shen and Viscarra Rossel (2021): Bayesian
optimisation over Conv-/FC-block architectures and training settings, guided by the 10-fold cross-validated
RMSE, with early stopping. Here a trial trains one config on all folds (the same folds for every trial)
and reports, after every epoch, the mean over folds of each fold's best validation RMSE so far, so a
Hyperband-style scheduler (ASHA) can stop poor trials early; the last report of a trial that ran to its
end carries ``complete=True`` and a checkpoint: the fold ensemble as a model directory
(:mod:`dtl_dist.nn.model_dir`).

This module never imports a cluster framework. The trials run through a ``runner`` (e.g.
:class:`dtl_dist.engines.ray.TuneRunner`: Ray Tune with an Optuna TPE searcher and an ASHA scheduler) that
calls a :class:`Trial` with each sampled config and a ``report`` function of its own, and returns one plain
record per trial (:meth:`SearchResult.from_outcomes`).

References
----------
Shen Z. et al. (2022), section 2.3.1. Shen Z., Viscarra Rossel R.A. (2021) Automated spectroscopic
modelling with optimised convolutional neural networks. Sci. Rep. 11. Li L. et al. (2020) A system for
massively parallel hyperparameter tuning (ASHA). Bergstra J. et al. (2011) Algorithms for
hyper-parameter optimization (TPE).
"""

from __future__ import annotations

import gc
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from dtl_dist.errors import UserInputError
from dtl_dist.nn.folds import kfold_assignment
from dtl_dist.nn.model_dir import save_model
from dtl_dist.nn.trainer import check_xy, cross_validate

METRIC = "rmse"
"""The metric every trial reports and the search minimises: mean validation RMSE over the folds."""

STATUSES = ("complete", "stopped", "rejected", "error")
"""complete: trained to the end on all folds; stopped: stopped early by the scheduler; rejected: the
config cannot run (reason given, nothing trained); error: the trial raised (after its retries)."""

CHECKPOINT_MODEL = "model"
"""Name of the model directory inside a complete trial's checkpoint."""

Report = Callable[..., None]
"""``report(metrics: dict, write_checkpoint: Callable[[Path], None] | None = None)``."""


@dataclass(frozen=True)
class TuneData:
    """The data a search trains on: preprocessed spectra, targets and the fold of each sample.

    Build it with :meth:`make`, which validates the input. ``folds`` is fixed here so every trial (and
    every later transfer) sees the same train-validation folds (paper sections 2.3.1, 2.3.3).

    Attributes
    ----------
    X : ndarray (n, n_bands) float32, spectra after ``preprocessing``
    y : ndarray (n,) float32
    folds : ndarray (n,) int, fold id of each sample
    wavelengths : ndarray (n_bands,), nm
    preprocessing : tuple of str, steps applied to ``input_units`` spectra to get ``X``
    input_units : str
    source : str, where the data came from (recorded in model provenance)
    """

    X: np.ndarray
    y: np.ndarray
    folds: np.ndarray
    wavelengths: np.ndarray
    preprocessing: tuple = ("snv",)
    input_units: str = "absorbance"
    source: str = ""

    @classmethod
    def make(cls, X, y, *, folds: int = 10, seed: int = 0, wavelengths=None, preprocessing=("snv",),
             input_units="absorbance", source="") -> "TuneData":
        """Validate spectra and targets and draw the seeded fold assignment.

        Raises
        ------
        UserInputError
            On NaN/inf targets or spectra, shape mismatches, or fewer samples than folds.
        """
        X, y = check_xy(X, y, f"tuning data{' of ' + source if source else ''}")
        wavelengths = np.arange(X.shape[1], dtype=np.float64) if wavelengths is None else np.asarray(wavelengths)
        if wavelengths.shape != (X.shape[1],):
            raise UserInputError(f"wavelengths: expected {X.shape[1]} values, got {wavelengths.shape}")
        return cls(X, y, kfold_assignment(X.shape[0], folds, seed), wavelengths, tuple(preprocessing),
                   input_units, str(source))

    @property
    def n_folds(self) -> int:
        return int(self.folds.max()) + 1


def _problems(space, params: dict, n_bands: int, seed: int) -> tuple[list[str], object, object]:
    """Reasons a sampled config cannot run, and its (CNNConfig, TrainConfig) when it can."""
    problems = space.validate(params, n_bands)
    if problems:
        return problems, None, None
    cnn_config, train_config = space.to_config(params, seed=seed)
    return [], cnn_config, train_config


def run_trial(params: dict, data: TuneData, space, *, report: Report, mode: str = "vectorised", seed: int = 0,
              device: str = "cpu", provenance: dict | None = None) -> None:
    """One trial: check the config, cross-validate it on ``data.folds`` and report as it goes.

    Reports ``{"rmse", "epoch"}`` after every epoch (``mode="vectorised"``: all folds advance together;
    ``"sequential"`` reports only at the end), then a final report with ``complete=True``, the fold
    spread, epochs, time and a checkpoint writer that saves the fold ensemble as a model directory.
    A config that cannot run is reported once with ``status="rejected"``, its ``reason`` and an infinite
    RMSE, without training.

    Parameters
    ----------
    params : the sampled hyper-parameters (flat dict, as produced by ``space.suggest``).
    data : TuneData
    space : the :class:`~dtl_dist.nn.space.SearchSpace` that sampled ``params``.
    report : the runner's report function; it may stop the trial (by raising) when the scheduler says so.
    mode : {"vectorised", "sequential"} fold training mode of :func:`~dtl_dist.nn.trainer.cross_validate`.
    seed : seed of the fold models' initial weights, shuffling and dropout (same for every trial).
    device : torch device of the trial ("cuda" when the runner gave it a GPU).
    provenance : extra provenance recorded in the checkpoint's model directory.
    """
    n_bands = data.X.shape[1]
    problems, cnn_config, train_config = _problems(space, params, n_bands, seed)
    if problems:
        report({METRIC: math.inf, "status": "rejected", "reason": "; ".join(problems), "complete": False})
        return
    best = np.full(data.n_folds, np.inf)
    last_epoch = [-1]
    start = time.perf_counter()

    def on_epoch(fold, epoch, train_loss, val_loss):
        if mode == "vectorised" and epoch > last_epoch[0]:
            if last_epoch[0] >= 0:
                report({METRIC: _mean_rmse(best), "epoch": last_epoch[0] + 1, "complete": False, "status": "running"})
            last_epoch[0] = epoch
        if math.isfinite(val_loss):
            best[fold] = min(best[fold], val_loss)

    try:
        result = cross_validate(data.X, data.y, cnn_config, train_config, data.folds, mode=mode, device=device,
                                on_epoch=on_epoch)
        fold_rmse = np.where(np.isfinite(result.fold_rmse), result.fold_rmse, np.inf)
        metrics = {
            METRIC: float(fold_rmse.mean()), "rmse_std": float(fold_rmse.std()), "status": "complete",
            "complete": True, "epoch": int(result.epochs.max()), "epochs_mean": float(result.epochs.mean()),
            "fold_rmse": json.dumps([round(float(r), 6) for r in fold_rmse]), "train_time_s": time.perf_counter() - start,
        }
        states = [{k: v.cpu() for k, v in s.items()} for s in result.states]

        def write_checkpoint(directory: Path) -> None:
            save_model(Path(directory) / CHECKPOINT_MODEL, cnn_config, states, wavelengths=data.wavelengths,
                       preprocessing=data.preprocessing, input_units=data.input_units, fold_rmse=fold_rmse,
                       training={"train_config": train_config.to_dict(), "mode": mode, "params": params},
                       provenance={"data": data.source, "n_samples": int(data.y.size), "n_folds": data.n_folds,
                                   "params": params, **(provenance or {})})

        report(metrics, write_checkpoint)
    finally:
        release_memory(device)


@dataclass(frozen=True)
class Trial:
    """The work of every trial of one search, handed to a runner: ``trial(params, report, device, trial_id)``
    runs :func:`run_trial` on this search's data and space (picklable, so a runner can ship it to workers)."""

    data: TuneData
    space: object
    mode: str = "vectorised"
    seed: int = 0

    def __call__(self, params: dict, report: Report, device: str = "cpu", trial_id: str = "") -> None:
        run_trial(params, self.data, self.space, report=report, mode=self.mode, seed=self.seed, device=device,
                  provenance={"trial_id": trial_id})


def _mean_rmse(best_mse: np.ndarray) -> float:
    return float(np.mean(np.sqrt(best_mse)))


def release_memory(device) -> None:
    """Free what a finished or stopped trial held (GPU memory in particular), for the next trial."""
    gc.collect()
    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class TrialRecord:
    """One row of the results table."""

    trial_id: str
    status: str
    rmse: float
    rmse_std: float = math.nan
    fold_rmse: str = ""
    epochs: int = 0
    time_s: float = math.nan
    reason: str = ""
    params: dict = field(default_factory=dict)
    checkpoint: str | None = None

    def row(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("params", "checkpoint")}
        out["params"] = json.dumps(self.params, sort_keys=True)
        out.update({f"param_{k}": v for k, v in sorted(self.params.items())})
        return out


@dataclass
class SearchResult:
    """All trials of a search and the best complete one.

    Attributes
    ----------
    trials : list of TrialRecord
    best : TrialRecord or None (None when no trial completed)
    """

    trials: list[TrialRecord]

    @property
    def complete(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.status == "complete" and math.isfinite(t.rmse)]

    @property
    def best(self) -> TrialRecord | None:
        done = self.complete
        return min(done, key=lambda t: (t.rmse, t.trial_id)) if done else None

    def table(self):
        """The results table as a pandas DataFrame, best first."""
        import pandas as pd

        frame = pd.DataFrame([t.row() for t in self.trials])
        return frame.sort_values(["rmse", "trial_id"], kind="stable").reset_index(drop=True) if len(frame) else frame

    @classmethod
    def from_outcomes(cls, outcomes) -> "SearchResult":
        """Build the result from a runner's records, one dict per trial: ``trial_id``, ``params``, ``metrics``
        (the trial's last report), ``error`` (text, or None) and ``checkpoint`` (directory, or None)."""
        records = []
        for outcome in outcomes:
            metrics = outcome.get("metrics") or {}
            if outcome.get("error"):
                status, reason = "error", str(outcome["error"])[:500]
            elif metrics.get("status") == "rejected":
                status, reason = "rejected", metrics.get("reason", "")
            else:
                status, reason = ("complete" if metrics.get("complete") else "stopped"), ""
            records.append(TrialRecord(
                trial_id=outcome["trial_id"], status=status, rmse=float(metrics.get(METRIC, math.inf)),
                rmse_std=float(metrics.get("rmse_std", math.nan)), fold_rmse=metrics.get("fold_rmse", ""),
                epochs=int(metrics.get("epoch", 0)),
                time_s=float(metrics.get("train_time_s", metrics.get("time_total_s", math.nan))), reason=reason,
                params=dict(outcome.get("params") or {}),
                checkpoint=outcome.get("checkpoint") if status == "complete" else None,
            ))
        return cls(sorted(records, key=lambda r: r.trial_id))

    def best_model_dir(self) -> Path | None:
        """The best trial's model directory (inside its checkpoint)."""
        best = self.best
        return None if best is None or best.checkpoint is None else Path(best.checkpoint) / CHECKPOINT_MODEL


@dataclass(frozen=True)
class SearchSettings:
    """How a runner searches: number of trials, seed, scheduler budget, fold training mode.

    Attributes
    ----------
    trials : number of configs to try (``num_samples``).
    seed : seed of the TPE sampler.
    max_epochs : ASHA's ``max_t`` (epochs); trials stop at most here or by their own early stopping.
    grace_period : epochs every trial gets before ASHA may stop it.
    reduction_factor : ASHA's halving rate.
    mode : fold training mode of each trial.
    metric : the name of the reported score to minimise.
    """

    trials: int
    seed: int = 0
    max_epochs: int = 200
    grace_period: int = 10
    reduction_factor: int = 3
    mode: str = "vectorised"
    metric: str = METRIC

    def check(self) -> None:
        if not isinstance(self.trials, int) or self.trials < 1:
            raise UserInputError(f"--trials {self.trials!r}: expected an integer >= 1")
        if not 1 <= self.grace_period <= self.max_epochs:
            raise UserInputError(f"grace_period={self.grace_period}: expected 1..max_epochs ({self.max_epochs})")
        if self.reduction_factor < 2:
            raise UserInputError(f"reduction_factor={self.reduction_factor}: expected >= 2")


class Runner(Protocol):
    """Runs the trials of a search (see :class:`dtl_dist.engines.ray.TuneRunner`): samples ``settings.trials``
    configs from ``space``, calls ``trial`` on each and returns one record per trial (see
    :meth:`SearchResult.from_outcomes`)."""

    def run(self, trial: Trial, space, settings: SearchSettings) -> list[dict]: ...


def check_space(space, n_bands: int, *, draws: int = 200, seed: int = 0) -> None:
    """Reject a space none of whose configs can run on ``n_bands`` bands, before any trial starts.

    (An empty or self-contradictory space is already rejected when the
    :class:`~dtl_dist.nn.space.SearchSpace` is built.) Draws ``draws`` random configs; all invalid means
    the ranges contradict the data (e.g. kernels longer than the spectrum).
    """
    rng = np.random.default_rng(seed)
    first = None
    for _ in range(draws):
        problems = space.validate(space.sample(rng), n_bands)
        if not problems:
            return
        first = first or problems
    raise UserInputError(
        f"search space: none of {draws} sampled configs can run on {n_bands} bands, e.g. {'; '.join(first)}"
    )


def tune(data: TuneData, space, *, trials: int, runner: Runner, seed: int = 0, max_epochs: int | None = None,
         grace_period: int = 10, reduction_factor: int = 3, mode: str = "vectorised") -> SearchResult:
    """Search ``space`` for the 1D-CNN with the lowest 10-fold cross-validated RMSE on ``data``.

    Parameters
    ----------
    data : TuneData (spectra, targets and the fixed folds).
    space : the search space (:mod:`dtl_dist.nn.space`).
    trials : number of configs to evaluate (the paper evaluates hundreds).
    runner : where the trials run, e.g. ``dtl_dist.engines.ray.TuneRunner(...)`` (resources per trial,
        concurrency, checkpoints, retries, resume).
    seed : seed of the Bayesian (TPE) sampler.
    max_epochs : epochs budget of the scheduler, ASHA's ``max_t`` (default: the space's largest ``max_epochs``).
    grace_period, reduction_factor : ASHA settings (epochs before a trial may be stopped; halving rate).
    mode : fold training mode of each trial ("vectorised" reports every epoch, so ASHA can stop it early).

    Returns
    -------
    SearchResult

    Raises
    ------
    UserInputError
        For an empty or contradictory space, bad settings or bad data.

    References
    ----------
    Shen et al. (2022), section 2.3.1.
    """
    check_space(space, data.X.shape[1], seed=seed)
    if max_epochs is None:
        epochs = space.params["max_epochs"]
        max_epochs = int(max(epochs.choices) if hasattr(epochs, "choices") else epochs.high)
    settings = SearchSettings(trials, seed, max_epochs, min(grace_period, max_epochs), reduction_factor, mode)
    settings.check()
    return SearchResult.from_outcomes(runner.run(Trial(data, space, mode, seed), space, settings))
