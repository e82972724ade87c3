"""Nested designs: a 1D-CNN's local error estimated with the n labelled samples only (paper sections 2.3-2.4).

The paper chose its models by cross-validated RMSE and reported their error on the N - n local_test samples.
A practitioner has only the n labelled local samples, so a study estimates each model's local error by an
outer K-fold cross-validation over those n samples: for each outer fold, the model is rebuilt without that
fold's local samples (library samples may train, never validate) and predicts them. Inside an outer split,
every choice is made on its training part alone: the fold models stop early on inner folds of that part
(the paper's 10-fold cross-validation, section 2.3.1) and a search or a transfer picks its candidate by
their mean inner RMSE.

A :class:`Design` lists the outer splits of one model (the last split is the final model's, trained on all
the model's data); :func:`fit_design` trains one candidate (an architecture, or a freeze depth) on every
inner fold of every split at once (:func:`~dtl_dist.nn.trainer.train_splits`) and returns each split's mean
inner RMSE and its fold ensemble's predictions of the split's held-out rows. :func:`choose_per_split` then
picks, per split, the candidate with the lowest inner RMSE among several fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dtl_dist.errors import UserInputError
from dtl_dist.nn.builder import CNNConfig, build_cnn
from dtl_dist.nn.folds import kfold_assignment
from dtl_dist.nn.trainer import EpochCallback, Split, TrainConfig, check_xy, fold_seed, train_splits


@dataclass(frozen=True)
class OuterSplit:
    """One outer split of a design.

    Attributes
    ----------
    train : rows of ``Design.X`` that train this split's fold models.
    inner : inner fold id (0..K-1) of each training row: fold model ``f`` validates on fold ``f``.
    predict : rows this split's fold ensemble predicts (its held-out local samples; may be empty).
    init_state : initial weights of this split's fold models (the transfer base model), or None.
    """

    train: np.ndarray
    inner: np.ndarray
    predict: np.ndarray
    init_state: dict | None = None

    @property
    def n_inner(self) -> int:
        return int(self.inner.max()) + 1


@dataclass(frozen=True)
class Design:
    """The data of one model (SNV spectra ``X``, targets ``y``) and its outer splits, the final model's last."""

    X: np.ndarray
    y: np.ndarray
    splits: tuple

    @classmethod
    def single(cls, X, y, folds: int = 10, seed: int = 0, predict=()) -> "Design":
        """One split over every row with ``folds`` random inner folds (a plain cross-validated model)."""
        X, y = check_xy(X, y, "training")
        inner = kfold_assignment(len(y), folds, seed)
        return cls(X, y, (OuterSplit(np.arange(len(y)), inner, np.asarray(predict, dtype=np.int64)),))

    @property
    def final(self) -> OuterSplit:
        return self.splits[-1]

    def split(self, s: int) -> "Design":
        """The design of outer split ``s`` alone (same data): its fit is that split's part of the whole fit."""
        return Design(self.X, self.y, (self.splits[s],))

    def inner_splits(self) -> tuple[list[Split], list[tuple[int, int]]]:
        """The :class:`Split` of every (outer split, inner fold) and its (split, fold) position."""
        out, where = [], []
        for s, split in enumerate(self.splits):
            for f in range(split.n_inner):
                out.append(Split(split.train[split.inner != f], split.train[split.inner == f], split.init_state))
                where.append((s, f))
        return out, where


@dataclass
class DesignFit:
    """One candidate trained on every split of a design (:func:`fit_design`).

    Attributes
    ----------
    inner_rmse : ndarray (S,), mean validation RMSE of each split's fold models (the choice criterion).
    fold_rmse : list of ndarray, each split's fold-model validation RMSEs.
    predictions : list of ndarray, each split's fold-ensemble prediction of its ``predict`` rows.
    final_states : list of dict, the final split's fold models (the model that is kept).
    epochs : ndarray (S,), mean epochs trained per split.
    """

    inner_rmse: np.ndarray
    fold_rmse: list
    predictions: list
    final_states: list
    epochs: np.ndarray

    @classmethod
    def join(cls, fits: list["DesignFit"]) -> "DesignFit":
        """The fit of a whole design from the fits of its splits alone (:meth:`Design.split`), in split order."""
        return cls(np.concatenate([f.inner_rmse for f in fits]), [r for f in fits for r in f.fold_rmse],
                   [p for f in fits for p in f.predictions], fits[-1].final_states,
                   np.concatenate([f.epochs for f in fits]))


def fit_design(design: Design, cnn_config: CNNConfig, train_config: TrainConfig, *, frozen_blocks: int = 0,
               mode: str = "auto", device=None, on_epoch: EpochCallback | None = None) -> DesignFit:
    """Train ``cnn_config`` on every inner fold of every split of ``design`` (all in one stack when vectorised).

    Inner fold ``f`` of every split uses the seed of fold ``f`` (:func:`~dtl_dist.nn.trainer.fold_seed`), so
    a one-split design trains exactly the models of :func:`~dtl_dist.nn.trainer.cross_validate` on the
    same folds. ``on_epoch(model, epoch, train_loss, val_loss)`` numbers the models as
    :meth:`Design.inner_splits` lists them. ``device``: default the task's (:func:`dtl_dist.devices.task_device`).
    """
    splits, where = design.inner_splits()
    seeds = [fold_seed(train_config.seed, f) for _, f in where]
    stoppers = train_splits(design.X, design.y, splits, cnn_config, train_config, seeds,
                            frozen_blocks=frozen_blocks, mode=mode, device=device, on_epoch=on_epoch)
    n_bands = design.X.shape[1]
    inner_rmse, fold_rmse, predictions, epochs = [], [], [], []
    for s, split in enumerate(design.splits):
        mine = [i for i, (owner, _) in enumerate(where) if owner == s]
        rmse = np.array([math.sqrt(stoppers[i].best) if math.isfinite(stoppers[i].best) else math.inf for i in mine])
        fold_rmse.append(rmse)
        inner_rmse.append(float(rmse.mean()))
        epochs.append(float(np.mean([stoppers[i].epochs for i in mine])))
        predictions.append(ensemble_predict(cnn_config, n_bands, [stoppers[i].state for i in mine],
                                            design.X[split.predict]))
    final = [i for i, (owner, _) in enumerate(where) if owner == len(design.splits) - 1]
    return DesignFit(np.array(inner_rmse), fold_rmse, predictions, [stoppers[i].state for i in final],
                     np.array(epochs))


@torch.no_grad()
def ensemble_predict(cnn_config: CNNConfig, n_bands: int, states: list[dict], X) -> np.ndarray:
    """Mean prediction of the fold models ``states`` for spectra ``X`` (empty ``X``: empty result)."""
    X = torch.as_tensor(np.asarray(X, dtype=np.float32)).reshape(-1, 1, n_bands)
    if len(X) == 0:
        return np.empty(0)
    out = []
    for state in states:
        model = build_cnn(cnn_config, n_bands)
        model.load_state_dict(state)
        out.append(model.eval()(X).double().numpy())
    return np.mean(out, axis=0)


def choose_per_split(inner_rmse: dict) -> list:
    """Per split, the candidate with the lowest inner RMSE (ties: the first in ``inner_rmse``'s order).

    Parameters
    ----------
    inner_rmse : dict candidate -> sequence (S,) of inner RMSEs (a candidate that could not run: inf/NaN).

    Returns
    -------
    list of S candidates (None for a split where no candidate has a finite RMSE).
    """
    if not inner_rmse:
        raise UserInputError("no candidate to choose from: every trial failed or was stopped")
    n_splits = len(next(iter(inner_rmse.values())))
    chosen = []
    for s in range(n_splits):
        finite = {c: float(r[s]) for c, r in inner_rmse.items() if np.isfinite(r[s])}
        chosen.append(min(finite, key=finite.get) if finite else None)
    return chosen
