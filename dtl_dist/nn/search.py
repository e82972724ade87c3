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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from dtl_dist.devices import resolve_device
from dtl_dist.errors import UserInputError
from dtl_dist.library.atomic import atomic_path, write_json
from dtl_dist.mapping import BlocksLost, serial_map
from dtl_dist.nn.model_dir import save_model
from dtl_dist.nn.nested import Design, choose_per_split, fit_design
from dtl_dist.nn.space import DRAW_MAX_PARAMS
from dtl_dist.nn.trainer import check_xy, resolve_mode

METRIC = "rmse"
"""The metric every trial reports and the search minimises: mean validation RMSE over the folds."""

STATUSES = ("complete", "stopped", "rejected", "error")
"""complete: trained to the end on all folds; stopped: stopped early by the scheduler; rejected: the
config cannot run (reason given, nothing trained); error: the trial raised, or its worker died (after its
retries; reason ``worker lost: ...``)."""

CHECKPOINT_MODEL = "model"
"""Name of the model directory inside a complete trial's checkpoint."""

Report = Callable[..., None]
"""``report(metrics: dict, write_checkpoint: Callable[[Path], None] | None = None)``."""


@dataclass(frozen=True)
class TuneData:
    """The data a search trains on: a :class:`~dtl_dist.nn.nested.Design` (preprocessed spectra, targets and
    the outer splits with their inner folds) and what the spectra are.

    :meth:`make` builds the plain case: one split over every sample with seeded folds. The folds are fixed
    here so every trial (and every later transfer) sees the same train-validation folds (paper sections
    2.3.1, 2.3.3); a study passes a nested design instead (:mod:`dtl_dist.nn.nested`).

    Attributes
    ----------
    design : Design (its ``X``: spectra after ``preprocessing``, float32; ``y``: targets)
    wavelengths : ndarray (n_bands,), nm
    preprocessing : tuple of str, steps applied to ``input_units`` spectra to get ``X``
    input_units : str
    source : str, where the data came from (recorded in model provenance)
    """

    design: Design
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
        return cls.of(Design.single(X, y, folds, seed), wavelengths=wavelengths, preprocessing=preprocessing,
                      input_units=input_units, source=source)

    @classmethod
    def of(cls, design: Design, *, wavelengths=None, preprocessing=("snv",), input_units="absorbance",
           source="") -> "TuneData":
        """Wrap a design, checking its grid."""
        n_bands = design.X.shape[1]
        wavelengths = np.arange(n_bands, dtype=np.float64) if wavelengths is None else np.asarray(wavelengths)
        if wavelengths.shape != (n_bands,):
            raise UserInputError(f"wavelengths: expected {n_bands} values, got {wavelengths.shape}")
        return cls(design, wavelengths, tuple(preprocessing), input_units, str(source))

    @property
    def X(self) -> np.ndarray:
        return self.design.X

    @property
    def y(self) -> np.ndarray:
        return self.design.y

    @property
    def folds(self) -> np.ndarray:
        """Inner fold of each training sample of the final model (every sample, for :meth:`make`)."""
        return self.design.final.inner

    @property
    def n_folds(self) -> int:
        return self.design.final.n_inner


def _problems(space, params: dict, n_bands: int, seed: int) -> tuple[list[str], object, object]:
    """Reasons a sampled config cannot run, and its (CNNConfig, TrainConfig) when it can."""
    problems = space.validate(params, n_bands)
    if problems:
        return problems, None, None
    cnn_config, train_config = space.to_config(params, seed=seed)
    return [], cnn_config, train_config


def run_trial(params: dict, data: TuneData, space, *, report: Report, mode: str = "vectorised", seed: int = 0,
              device: str | None = None, max_epochs: int | None = None, provenance: dict | None = None) -> None:
    """One trial: check the config, train it on every split of ``data.design`` and report as it goes.

    Reports ``{"rmse", "epoch"}`` after every epoch (``mode="vectorised"``: all folds advance together;
    ``"sequential"`` reports only at the end), where ``rmse`` is the mean over the final split's folds of each
    fold's best validation RMSE so far; then a final report with ``complete=True``, the fold spread, epochs,
    time, every split's inner RMSE (``split_rmse``) and held-out predictions (``split_predictions``, JSON)
    and a checkpoint writer that saves the final split's fold ensemble as a model directory.
    A config that cannot run is reported once with ``status="rejected"``, its ``reason`` and an infinite
    RMSE, without training.

    Parameters
    ----------
    params : the sampled hyper-parameters (flat dict, as produced by ``space.suggest``).
    data : TuneData
    space : the :class:`~dtl_dist.nn.space.SearchSpace` that sampled ``params``.
    report : the runner's report function; it may stop the trial (by raising) when the scheduler says so.
    mode : {"vectorised", "sequential", "auto"} fold training mode (:func:`~dtl_dist.nn.trainer.train_splits`).
    seed : seed of the fold models' initial weights, shuffling and dropout (same for every trial).
    device : torch device of the trial (default: the task's, "cuda" when the engine gave it a GPU).
    max_epochs : the search's epoch budget: the config trains at most this many epochs (patience likewise).
    provenance : extra provenance recorded in the checkpoint's model directory.
    """
    n_bands = data.X.shape[1]
    device = resolve_device(device)
    problems, cnn_config, train_config = _problems(space, params, n_bands, seed)
    if problems:
        report({METRIC: math.inf, "status": "rejected", "reason": "; ".join(problems), "complete": False})
        return
    if max_epochs is not None:
        train_config = replace(train_config, max_epochs=min(train_config.max_epochs, max_epochs),
                               patience=min(train_config.patience, max_epochs))
    mode = resolve_mode(mode, cnn_config, n_bands)
    _, where = data.design.inner_splits()
    final = len(data.design.splits) - 1
    best = {i: math.inf for i, (split, _) in enumerate(where) if split == final}
    last_epoch = [-1]
    start = time.perf_counter()

    def on_epoch(model, epoch, train_loss, val_loss):
        if mode == "vectorised" and epoch > last_epoch[0]:
            if last_epoch[0] >= 0:
                report({METRIC: _mean_rmse(best), "epoch": last_epoch[0] + 1, "complete": False, "status": "running"})
            last_epoch[0] = epoch
        if model in best and math.isfinite(val_loss):
            best[model] = min(best[model], val_loss)

    try:
        fit = fit_design(data.design, cnn_config, train_config, mode=mode, device=device, on_epoch=on_epoch)
        fold_rmse = fit.fold_rmse[-1]
        metrics = {
            METRIC: float(fit.inner_rmse[-1]), "rmse_std": float(fold_rmse.std()), "status": "complete",
            "complete": True, "epoch": int(round(fit.epochs[-1])), "epochs_mean": float(fit.epochs[-1]),
            "fold_rmse": _json_floats(fold_rmse), "split_rmse": _json_floats(fit.inner_rmse),
            "split_predictions": json.dumps([_floats(p) for p in fit.predictions]),
            "train_time_s": time.perf_counter() - start,
        }
        states = [{k: v.cpu() for k, v in s.items()} for s in fit.final_states]

        def write_checkpoint(directory: Path) -> None:
            save_model(Path(directory) / CHECKPOINT_MODEL, cnn_config, states, wavelengths=data.wavelengths,
                       preprocessing=data.preprocessing, input_units=data.input_units, fold_rmse=fold_rmse,
                       training={"train_config": train_config.to_dict(), "mode": mode, "params": params},
                       provenance={"data": data.source, "n_samples": int(data.design.final.train.size),
                                   "n_folds": data.n_folds, "params": params, **(provenance or {})})

        report(metrics, write_checkpoint)
    finally:
        release_memory(device)


def _floats(values) -> list:
    return [round(float(v), 6) if np.isfinite(v) else None for v in values]


def _json_floats(values) -> str:
    return json.dumps(_floats(values))


@dataclass(frozen=True)
class Trial:
    """The work of every trial of one search, handed to a runner: ``trial(params, report, device, trial_id)``
    runs :func:`run_trial` on this search's data and space (picklable, so a runner can ship it to workers)."""

    data: TuneData
    space: object
    mode: str = "vectorised"
    seed: int = 0
    max_epochs: int | None = None

    def __call__(self, params: dict, report: Report, device: str | None = None, trial_id: str = "") -> None:
        run_trial(params, self.data, self.space, report=report, mode=self.mode, seed=self.seed, device=device,
                  max_epochs=self.max_epochs, provenance={"trial_id": trial_id})


def _mean_rmse(best_mse: dict) -> float:
    return float(np.mean(np.sqrt(list(best_mse.values()))))


def release_memory(device) -> None:
    """Free the GPU memory a finished or stopped trial held, for the next trial. On a CPU the trial's tensors go
    with their last reference (and cycles with Python's own collector): a full ``gc.collect`` there cost 0.2-2 s
    per trial, more than a small trial trains (CNNRegressor on 60 samples)."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        gc.collect()
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
    split_rmse: str = ""
    split_predictions: str = ""
    params: dict = field(default_factory=dict)
    checkpoint: str | None = None

    def row(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("params", "checkpoint", "split_predictions")}
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

    def per_split(self) -> tuple[list, list]:
        """The nested choice (:func:`~dtl_dist.nn.nested.choose_per_split`): per outer split of the design, the
        complete trial with the lowest inner RMSE on that split, and its predictions of the split's held-out
        rows (None where no trial completed)."""
        done = {t.trial_id: t for t in self.complete if t.split_rmse}
        rmse = {tid: np.array([math.inf if v is None else v for v in json.loads(t.split_rmse)], dtype=float)
                for tid, t in done.items()}
        chosen = choose_per_split(rmse)
        predictions = [None if c is None else np.array(json.loads(done[c].split_predictions)[s], dtype=float)
                       for s, c in enumerate(chosen)]
        return [done.get(c) for c in chosen], predictions

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
                split_rmse=metrics.get("split_rmse", ""), split_predictions=metrics.get("split_predictions", ""),
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


class CandidateRunner:
    """Run a search's trials through a ``map_blocks`` (in-process, Dask or Ray tasks) on a fixed list of configs.

    The configs are the ``starters`` (known-good architectures and training settings) followed by seeded
    draws from the space, up to ``settings.trials``; nothing adapts to the results, so the per-split choice
    over them (:meth:`SearchResult.per_split`) is a nested estimate that never saw a split's held-out
    samples. Each trial writes ``trial_NNNNN/outcome.json`` (and ``checkpoint/`` when complete) into
    ``storage_path``; a rerun reads finished trials back instead of training them again. A trial whose worker
    died past the engine's retries (:class:`~dtl_dist.mapping.BlocksLost`) is an error trial of this run, and
    tried again by a rerun.

    Parameters
    ----------
    storage_path : directory of the trials.
    map_blocks : ``map_blocks(fn, blocks, shared=())`` that runs the trials (default in-process).
    starters : flat trial dicts tried first (each must lie inside the space).
    device : torch device of every trial (default: each task's, :func:`dtl_dist.devices.task_device`).
    progress : called with a line after every ``chunk`` trials.
    """

    def __init__(self, storage_path, *, map_blocks=serial_map, starters=(), device: str | None = None,
                 progress: Callable[[str], None] | None = None, chunk: int = 16):
        self.storage_path = Path(storage_path)
        self.map_blocks = map_blocks
        self.starters = [dict(s) for s in starters]
        self.device = device
        self.progress = progress
        self.chunk = chunk

    def configs(self, space, settings: SearchSettings, n_bands: int) -> list[dict]:
        """The trials' configs: the starters, then draws of ``space.sample`` seeded by ``settings.seed`` (of at most
        :data:`~dtl_dist.nn.space.DRAW_MAX_PARAMS` parameters)."""
        for i, starter in enumerate(self.starters):
            problems = space.validate(starter, n_bands)
            if problems:
                raise UserInputError(f"starter config {i}: {'; '.join(problems)}")
        configs = self.starters[: settings.trials]
        rng = np.random.default_rng(settings.seed)
        while len(configs) < settings.trials:
            configs.append(space.sample(rng, n_bands, max_params=DRAW_MAX_PARAMS))
        return configs

    def run(self, trial: Trial, space, settings: SearchSettings) -> list[dict]:
        configs = self.configs(space, settings, trial.data.X.shape[1])
        self.storage_path.mkdir(parents=True, exist_ok=True)
        blocks = list(enumerate(configs))
        outcomes = []
        for start in range(0, len(blocks), self.chunk):  # in chunks, to report progress between them
            chunk = blocks[start:start + self.chunk]
            try:
                outcomes += self.map_blocks(_run_candidate, chunk, shared=(trial, str(self.storage_path), self.device))
            except BlocksLost as exc:  # no outcome.json for a lost trial: a rerun of the search tries it again
                outcomes += [_lost(self.storage_path, chunk[i], exc.lost[i]) if i in exc.lost else outcome
                             for i, outcome in enumerate(exc.results)]
            if self.progress is not None:
                done = [o["metrics"].get(METRIC, math.inf) for o in outcomes if o["metrics"].get("complete")]
                self.progress(f"{len(outcomes)}/{len(blocks)} trials, best inner RMSE "
                              f"{min(done) if done else math.inf:.4f}")
        return outcomes


def _trial_dir(storage, number: int) -> Path:
    return Path(storage) / f"trial_{number:05d}"


def _lost(storage, block, reason: str) -> dict:
    """The outcome of a trial whose worker died every time it ran: an error trial."""
    number, params = block
    return {"trial_id": _trial_dir(storage, number).name, "params": params, "metrics": {},
            "error": f"worker lost: {reason}", "checkpoint": None}


def _run_candidate(block, trial: Trial, storage: str, device: str | None) -> dict:
    """One trial of a :class:`CandidateRunner`, or its outcome read back when it finished before."""
    number, params = block
    directory = _trial_dir(storage, number)
    if (directory / "outcome.json").is_file():
        return json.loads((directory / "outcome.json").read_text())
    last: dict = {}
    checkpoint = directory / "checkpoint"

    def report(metrics, write_checkpoint=None):
        last.clear()
        last.update(metrics)
        if write_checkpoint is not None:
            with atomic_path(checkpoint) as tmp:
                Path(tmp).mkdir()
                write_checkpoint(Path(tmp))

    error = None
    try:
        trial(params, report, device, directory.name)
    except Exception as exc:  # noqa: BLE001 - a config that breaks is recorded as an error trial, not fatal
        error = f"{type(exc).__name__}: {exc}"[:500]
    outcome = {"trial_id": directory.name, "params": params, "metrics": last, "error": error,
               "checkpoint": str(checkpoint) if checkpoint.is_dir() else None}
    write_json(directory / "outcome.json", outcome)
    return outcome


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
    return SearchResult.from_outcomes(runner.run(Trial(data, space, mode, seed, max_epochs), space, settings))
