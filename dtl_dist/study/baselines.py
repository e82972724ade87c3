"""The PLS and MBL baselines of a study, on the same outer splits as the 1D-CNNs (paper sections 1 and 2.3).

- ``local-PLS``: PLSR on the local samples; ``global-PLS``: on the library alone; ``RS-LOCAL-PLS``: on the
  k + n localised data (Lobsey et al. 2017); components by cross-validation on the inner folds of each split.
- ``spiked-PLS``: the library plus the local samples repeated ``w`` times (spiking with extra weight, Guerrero
  et al. 2014); ``w`` and the components are chosen together by inner cross-validation on the local samples
  (the library always trains).
- ``MBL``: memory-based learning (:mod:`dtl_dist.linear.mbl`) on the library plus the local samples, the
  neighbourhood size chosen by predicting each local sample without itself.

Each split's choices use its training part only; its held-out local samples give the ``cv_rmse``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dtl_dist.linear.mbl import MBL
from dtl_dist.linear.pls_kernel import pls1_cv_ncomp, pls1_fit
from dtl_dist.linear.saved import load_linear, save_mbl, save_pls
from dtl_dist.nn.nested import Design, OuterSplit
from dtl_dist.study.context import StudyContext

MAX_NCOMP = 20
SPIKING_WEIGHTS = (1, 5, 10, 20, 50)
"""Copies of each local sample tried by spiked-PLS."""


def _inner_cv(X, y, split: OuterSplit, max_ncomp: int) -> tuple[int, np.ndarray]:
    """Components of a split's PLS by its inner folds (rows with inner fold -1 always train)."""
    folds = []
    for f in range(split.n_inner):
        folds.append((split.train[split.inner != f], split.train[split.inner == f]))
    smallest = min(len(tr) for tr, _ in folds)
    return pls1_cv_ncomp(X, y, max(1, min(max_ncomp, smallest - 1, X.shape[1])), folds=folds, dtype="float64")


def _fit(X, y, rows, ncomp):
    fit = pls1_fit(X[rows][None], y[rows][None], ncomp, dtype=torch.float64)
    return fit.x_mean[0].numpy(), fit.coef[0].numpy(), float(fit.y_mean[0])


def pls_design(design: Design, max_ncomp: int = MAX_NCOMP) -> tuple[list, list, tuple]:
    """PLS on every split: (predictions, (ncomp, inner rmse) per split, the final split's model)."""
    X, y = design.X.astype(np.float64), design.y.astype(np.float64)
    predictions, choices, final = [], [], None
    for split in design.splits:
        ncomp, rmse = _inner_cv(X, y, split, max_ncomp)
        x_mean, coef, intercept = _fit(X, y, split.train, ncomp)
        predictions.append((X[split.predict] - x_mean) @ coef + intercept)
        choices.append((ncomp, float(rmse[ncomp - 1])))
        final = (x_mean, coef, intercept, ncomp)
    return predictions, choices, final


def pls_stage(ctx: StudyContext, name: str, design: Design, directory: Path) -> dict:
    """A PLSR baseline on ``design`` (local-PLS, global-PLS, RS-LOCAL-PLS)."""
    predictions, choices, (x_mean, coef, intercept, ncomp) = pls_design(design)
    save_pls(directory / "model", x_mean=x_mean, coef=coef, intercept=intercept, ncomp=ncomp,
             wavelengths=ctx.data.wavelengths, training={"ncomp_by": "inner cross-validation"},
             provenance={"study": str(ctx.out), "model": name}, overwrite=True)
    model = ctx.keep_model(name, directory / "model")
    return ctx.result(design, predictions, load_linear(model), design.final.train.size, method="pls",
                      ncomp=ncomp, per_split=[c for c, _ in choices])


def spiked_stage(ctx: StudyContext, name: str, designs: dict, directory: Path) -> dict:
    """Spiked PLS: per split, the (copies, components) pair with the lowest inner RMSE on local samples."""
    fits = {w: pls_design(design) for w, design in designs.items()}
    n_splits = len(next(iter(designs.values())).splits)
    predictions, chosen = [], []
    for s in range(n_splits):
        w = min(fits, key=lambda w: fits[w][1][s][1])
        chosen.append(w)
        predictions.append(fits[w][0][s])
    x_mean, coef, intercept, ncomp = fits[chosen[-1]][2]
    save_pls(directory / "model", x_mean=x_mean, coef=coef, intercept=intercept, ncomp=ncomp,
             wavelengths=ctx.data.wavelengths, training={"copies_of_local": chosen[-1]},
             provenance={"study": str(ctx.out), "model": name}, overwrite=True)
    model = ctx.keep_model(name, directory / "model")
    final = designs[chosen[-1]].final
    return ctx.result(designs[chosen[-1]], predictions, load_linear(model), np.unique(final.train).size,
                      method="spiked pls",
                      copies=chosen[-1], ncomp=ncomp, per_split=chosen)


def mbl_stage(ctx: StudyContext, name: str, design: Design, directory: Path) -> dict:
    """Memory-based learning: per split, a reference set of library and training local samples, ``k`` by
    predicting each of those local samples without itself."""
    X, y = design.X.astype(np.float64), design.y.astype(np.float64)
    n_local = ctx.data.local_y.size
    predictions, ks, mbl = [], [], None
    for split in design.splits:
        mbl = MBL().fit(X[split.train], y[split.train])
        local = np.flatnonzero(split.train >= design.y.size - n_local)
        mbl.k, _ = mbl.choose_k(local)
        predictions.append(mbl.predict(X[split.predict]))
        ks.append(mbl.k)
    save_mbl(directory / "model", mbl, wavelengths=ctx.data.wavelengths, training={"k_by": "leave-one-out"},
             provenance={"study": str(ctx.out), "model": name}, overwrite=True)
    model = ctx.keep_model(name, directory / "model")
    return ctx.result(design, predictions, load_linear(model), design.final.train.size, method="mbl", k=mbl.k,
                      per_split=ks)
