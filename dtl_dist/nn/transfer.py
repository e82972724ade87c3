"""Transferring representations from a library 1D-CNN to local data (paper sections 2.3.3 and 2.3.4).

Two steps (Fig. 2c): fix the weights of the front ``freeze_depth`` blocks of a trained global or country
1D-CNN, then retrain the remaining blocks on the local (DTL-R) or localised k + n (DTL-IR) data with
cross-validation on the same folds as the local model. Each ``freeze_depth`` gives one candidate; the one
with the lowest cross-validated RMSE is the final model.

The transferred model is one fold model of the library 1D-CNN, the *base model*: the fold model with
the smallest RMSE on the n local data (section 2.3.4), which cuts the models to transfer by 90 %.

The data come as a nested design (:mod:`dtl_dist.nn.nested`): :func:`with_base_models` picks the base model
of every outer split from that split's own labelled local samples, and :func:`transfer_representations`
trains every candidate depth on every split and picks, per split, the depth with the lowest inner RMSE. The
(depth, outer split) pairs are independent tasks, like the trials of a search; they run through
``map_blocks(fn, blocks, shared=())`` (default: in-process;
``dtl_dist.engines.ray.map_blocks`` spreads them over a Ray cluster). The result does not depend on who runs
them.

References
----------
Shen Z. et al. (2022), sections 2.3.3 and 2.3.4, Fig. 2c.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from dtl_dist.errors import UserInputError
from dtl_dist.mapping import serial_map
from dtl_dist.nn.builder import CNNConfig
from dtl_dist.nn.nested import Design, DesignFit, choose_per_split, ensemble_predict, fit_design
from dtl_dist.nn.trainer import TrainConfig


def select_base_model(fold_states: list[dict], cnn_config: CNNConfig, X_local, y_local) -> tuple[int, np.ndarray]:
    """The fold model of a library 1D-CNN with the smallest RMSE on local data (section 2.3.4).

    Returns
    -------
    index : int, the base model's position in ``fold_states``.
    rmse : ndarray (k,), RMSE of every fold model on ``(X_local, y_local)``.
    """
    y_local = np.asarray(y_local, dtype=np.float64)
    if not np.all(np.isfinite(y_local)):
        raise UserInputError("local targets: missing (NaN) values; the base model is chosen on measured samples")
    X_local = np.asarray(X_local, dtype=np.float32)
    if X_local.ndim != 2 or X_local.shape[0] != y_local.size:
        raise UserInputError(f"local data: {X_local.shape[0]} spectra but {y_local.size} targets")
    pred = np.stack([ensemble_predict(cnn_config, X_local.shape[1], [state], X_local) for state in fold_states])
    rmse = np.sqrt(np.mean((pred - y_local) ** 2, axis=1))
    return int(np.argmin(rmse)), rmse


def with_base_models(design: Design, fold_states: list[dict], cnn_config: CNNConfig, local_rows) -> Design:
    """The design with each split's base model: the library fold model with the lowest RMSE on the split's
    training rows that are local samples (``local_rows``: the rows of ``design.X`` that are local)."""
    local = np.asarray(local_rows)
    splits = []
    for split in design.splits:
        rows = split.train[np.isin(split.train, local)]
        best, _ = select_base_model(fold_states, cnn_config, design.X[rows], design.y[rows])
        splits.append(replace(split, init_state=fold_states[best]))
    return replace(design, splits=tuple(splits))


def freeze_depths(cnn_config: CNNConfig) -> list[int]:
    """Distinct front-block counts that can be fixed: 1 .. (number of blocks - 1), the output always trains.

    Blocks are ``conv..., flatten, fc..., output``; fixing the flatten block (no weights) gives the same
    model as fixing the conv blocks before it, so that depth is left out.
    """
    flatten_depth = len(cnn_config.conv_blocks) + 1
    return [d for d in range(1, cnn_config.n_blocks) if d != flatten_depth]


@dataclass(frozen=True)
class _Candidate:
    """One freeze depth, shipped with each outer split to whoever runs it (the design goes once, as a shared
    object)."""

    freeze_depth: int
    cnn_config: CNNConfig
    train_config: TrainConfig
    mode: str


def _fit_candidate(block: tuple, design: Design) -> DesignFit:
    """One freeze depth on one outer split of the design (a task)."""
    candidate, split = block
    return fit_design(design.split(split), candidate.cnn_config, candidate.train_config,
                      frozen_blocks=candidate.freeze_depth, mode=candidate.mode)


@dataclass
class TransferResult:
    """Result of :func:`transfer_representations`.

    Attributes
    ----------
    fits : dict freeze_depth -> DesignFit, every candidate on every split.
    chosen : list, the freeze depth chosen for each split (the last: the final model's).
    """

    fits: dict
    chosen: list

    @property
    def freeze_depth(self) -> int:
        """Fixed front blocks of the final model."""
        return self.chosen[-1]

    @property
    def cv_rmse(self) -> dict:
        """Mean inner RMSE of every candidate depth on the final split."""
        return {d: float(fit.inner_rmse[-1]) for d, fit in self.fits.items()}

    @property
    def final_states(self) -> list[dict]:
        return self.fits[self.freeze_depth].final_states

    def predictions(self) -> list:
        """Each split's held-out predictions by the depth chosen for it."""
        return [None if d is None else self.fits[d].predictions[s] for s, d in enumerate(self.chosen)]


def transfer_representations(design: Design, cnn_config: CNNConfig, train_config: TrainConfig | None = None, *,
                             depths=None, mode: str = "auto", map_blocks: Callable = serial_map) -> TransferResult:
    """Fix the front blocks of a library 1D-CNN and retrain the rest on local data (sections 2.3.3-2.3.4).

    Parameters
    ----------
    design : the local (n) or localised (k + n) data, preprocessed like the library, with the base model of
        each split as its ``init_state`` (:func:`with_base_models`).
    cnn_config : the library model's architecture.
    train_config : training settings of the retraining (default: :class:`TrainConfig` defaults).
    depths : candidate ``freeze_depth`` values (default: :func:`freeze_depths`).
    mode : fold training mode (see :func:`~dtl_dist.nn.trainer.train_splits`).
    map_blocks : ``map_blocks(fn, blocks, shared=()) -> list`` running one task per (depth, outer split).

    Returns
    -------
    TransferResult
    """
    if any(split.init_state is None for split in design.splits):
        raise UserInputError("transfer: every split needs its base model (see with_base_models)")
    train_config = train_config or TrainConfig()
    depths = freeze_depths(cnn_config) if depths is None else [int(d) for d in depths]
    bad = [d for d in depths if not 0 <= d < cnn_config.n_blocks]
    if not depths or bad:
        raise UserInputError(f"freeze depths {bad or depths}: expected values in 0..{cnn_config.n_blocks - 1} "
                             "(the output block trains)")
    n_splits = len(design.splits)
    blocks = [(_Candidate(d, cnn_config, train_config, mode), s) for d in depths for s in range(n_splits)]
    parts = map_blocks(_fit_candidate, blocks, shared=(design,))
    fits = {d: DesignFit.join(parts[i * n_splits:(i + 1) * n_splits]) for i, d in enumerate(depths)}
    chosen = choose_per_split({d: fit.inner_rmse for d, fit in fits.items()})
    if chosen[-1] is None:
        raise UserInputError("transfer: every freeze depth diverged (NaN RMSE); lower the learning rate")
    return TransferResult(fits, chosen)
