"""Transferring representations from a library 1D-CNN to local data (paper sections 2.3.3 and 2.3.4).

Two steps (Fig. 2c): fix the weights of the front ``freeze_depth`` blocks of a trained global or country
1D-CNN, then retrain the remaining blocks on the local (DTL-R) or localised k + n (DTL-IR) data with
10-fold cross-validation, on the same folds as the local model. Each ``freeze_depth`` gives one
candidate; the one with the lowest cross-validated RMSE is the final model.

The transferred model is one fold model of the library 1D-CNN, the *base model*: the fold model with
the smallest RMSE on the n local data (section 2.3.4), which cuts the models to transfer by 90 %.

The candidates (one per ``freeze_depth``) are independent; they run through ``map_blocks(fn, blocks)``
(default: in-process, one after another; ``dtl_dist.engines.ray.map_blocks`` spreads them over a Ray
cluster). The result does not depend on who runs them.

References
----------
Shen Z. et al. (2022), sections 2.3.3 and 2.3.4, Fig. 2c.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from dtl_dist.errors import UserInputError
from dtl_dist.mapping import serial_map
from dtl_dist.nn.builder import CNNConfig
from dtl_dist.nn.folds import check_assignment, kfold_assignment
from dtl_dist.nn.trainer import CVResult, FoldEnsemble, TrainConfig, cross_validate


def select_base_model(ensemble: FoldEnsemble, X_local, y_local) -> tuple[int, np.ndarray]:
    """The fold model of a library 1D-CNN with the smallest RMSE on the n local data (section 2.3.4).

    Returns
    -------
    index : int, the base model's position in ``ensemble.models``.
    rmse : ndarray (k,), RMSE of every fold model on ``(X_local, y_local)``.
    """
    y_local = np.asarray(y_local, dtype=np.float64)
    if not np.all(np.isfinite(y_local)):
        raise UserInputError("local targets: missing (NaN) values; the base model is chosen on measured samples")
    pred = ensemble.predict_each(X_local)
    if pred.shape[1] != y_local.size:
        raise UserInputError(f"local data: {pred.shape[1]} spectra but {y_local.size} targets")
    rmse = np.sqrt(np.mean((pred - y_local) ** 2, axis=1))
    return int(np.argmin(rmse)), rmse


def freeze_depths(cnn_config: CNNConfig) -> list[int]:
    """Distinct front-block counts that can be fixed: 1 .. (number of blocks - 1), the output always trains.

    Blocks are ``conv..., flatten, fc..., output``; fixing the flatten block (no weights) gives the same
    model as fixing the conv blocks before it, so that depth is left out.
    """
    flatten_depth = len(cnn_config.conv_blocks) + 1
    return [d for d in range(1, cnn_config.n_blocks) if d != flatten_depth]


@dataclass(frozen=True)
class _Candidate:
    """One transfer candidate, shipped to whoever runs it."""

    X: np.ndarray
    y: np.ndarray
    folds: np.ndarray
    cnn_config: CNNConfig
    train_config: TrainConfig
    base_state: dict
    freeze_depth: int
    mode: str


def _fit_candidate(c: _Candidate) -> CVResult:
    return cross_validate(c.X, c.y, c.cnn_config, c.train_config, c.folds, mode=c.mode, init_state=c.base_state,
                          frozen_blocks=c.freeze_depth)


@dataclass
class TransferResult:
    """Result of :func:`transfer_representations`.

    Attributes
    ----------
    freeze_depth : int, fixed front blocks of the chosen model (lowest cross-validated RMSE).
    cv_rmse : dict int -> float, mean fold RMSE of every candidate ``freeze_depth``.
    cv : dict int -> CVResult, every candidate's cross-validation.
    """

    freeze_depth: int
    cv_rmse: dict
    cv: dict

    @property
    def best(self) -> CVResult:
        return self.cv[self.freeze_depth]

    def ensemble(self) -> FoldEnsemble:
        """The chosen candidate's fold models (predict with their mean)."""
        return self.best.ensemble()


def transfer_representations(base_state: dict, cnn_config: CNNConfig, X, y, folds=10, *,
                             train_config: TrainConfig | None = None, depths=None, fold_seed: int = 0,
                             mode: str = "vectorised", map_blocks: Callable = serial_map) -> TransferResult:
    """Fix the front blocks of a library 1D-CNN and retrain the rest on local data (sections 2.3.3-2.3.4).

    Parameters
    ----------
    base_state : ``state_dict`` of the base model (see :func:`select_base_model`).
    cnn_config : its architecture.
    X, y : the local (n) or localised (k + n) spectra, preprocessed like the library, and targets.
    folds : number of folds or the fold id of each sample: pass the local model's fold ids so the transfer
        uses the same ten folds (section 2.3.3).
    train_config : training settings of the retraining (default: :class:`TrainConfig` defaults).
    depths : candidate ``freeze_depth`` values (default: :func:`freeze_depths`).
    fold_seed : seed of the split when ``folds`` is an int.
    mode : fold training mode (see :func:`~dtl_dist.nn.trainer.cross_validate`).
    map_blocks : ``map_blocks(fn, blocks) -> list`` running the candidates.

    Returns
    -------
    TransferResult
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise UserInputError(f"local data: expected spectra (n, bands) and n targets, got {X.shape} and {y.shape}")
    fold_ids = kfold_assignment(X.shape[0], folds, fold_seed) if np.isscalar(folds) else check_assignment(folds, X.shape[0])
    train_config = train_config or TrainConfig()
    depths = freeze_depths(cnn_config) if depths is None else [int(d) for d in depths]
    n_blocks = cnn_config.n_blocks
    bad = [d for d in depths if not 0 <= d < n_blocks]
    if not depths or bad:
        raise UserInputError(f"freeze depths {bad or depths}: expected values in 0..{n_blocks - 1} (output block trains)")
    candidates = [_Candidate(X, y, fold_ids, cnn_config, train_config, base_state, d, mode) for d in depths]
    results = map_blocks(_fit_candidate, candidates)
    cv = dict(zip(depths, results))
    cv_rmse = {d: float(r.mean_rmse) for d, r in cv.items()}
    finite = {d: r for d, r in cv_rmse.items() if np.isfinite(r)}
    if not finite:
        raise UserInputError("transfer: every freeze depth diverged (NaN RMSE); lower the learning rate")
    best = min(finite, key=lambda d: (finite[d], d))
    return TransferResult(best, cv_rmse, cv)
