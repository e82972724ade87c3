"""Ensembles of a study's models, chosen from the n labelled samples alone and scored honestly (nested).

On 30 labelled samples the cv_rmse of the good models differ by less than their noise, so one pick is close to
a random one, while a combination keeps what they share. Two rules, fixed in advance, make the ensembles a
practitioner could pick from the n labelled samples:

- ``mean-1SE``: the plain mean of the models whose cv_rmse is within one standard error of the lowest (the
  one-standard-error rule, Hastie et al. 2009, section 7.10; the standard error is that of the best model's
  per-fold RMSE over the outer folds);
- ``stack``: the weights, non-negative and summing to one, that minimise the squared error of the combined
  out-of-fold predictions (stacked regression, Breiman 1996).

The candidates are every single model of the study. The recommendation (:func:`dtl_dist.study.evaluate.recommend`)
compares like with like: the single model with the lowest cv_rmse enters it with the nested predictions of that
pick (:func:`single_pick`), since the lowest of 14 cv_rmse is biased low by the pick itself, and the ensembles
with their own nested ones; the stack stands unless a rival beats it by more than one standard error
(:func:`margin`). Each model's out-of-fold prediction of a sample of outer fold g was made by the model rebuilt
without fold g (:mod:`dtl_dist.study.designs`). The ensemble's own ``cv_rmse`` is nested (:func:`nested`): for
each outer fold f the rule is applied to the out-of-fold predictions and SOC of the samples of the *other* folds
only, and the combination it gives is applied to fold f's
out-of-fold predictions, which come from models that never saw fold f. So neither fold f's predictions nor its
SOC is ever a target a choice is fitted or ranked on; fold f's SOC enters the choice only as training data of
the members' models for the other folds, just as every labelled sample trains the models that predict the
others in any cross-validation. This is the simplest honest scheme: it needs no model beyond those the study
already built (a fully nested one would rebuild every model on every pair of outer folds). The ensemble's
model is the rule applied to all n out-of-fold predictions; it is saved as a model directory holding its
members (:mod:`dtl_dist.study.ensemble_model`), and its intervals are calibrated on its nested out-of-fold
residuals like any model's.

References
----------
Breiman L. (1996) Stacked regressions. Machine Learning 24, 49-64. Hastie T., Tibshirani R., Friedman J. (2009)
The Elements of Statistical Learning, 2nd ed., section 7.10. van der Laan M.J., Polley E.C., Hubbard A.E. (2007)
Super learner. Statistical Applications in Genetics and Molecular Biology 6(1), 25. Shen et al. (2022),
section 2.4 (the models compared).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from dtl_dist.study.context import StudyContext
from dtl_dist.study.ensemble_model import load_ensemble, save_ensemble
from dtl_dist.study.stages import stage_summary


def _rmse(residuals: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(residuals ** 2, axis=0))


def within_one_se(predictions: np.ndarray, y: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """Weights of ``mean-1SE``: equal weights on the models (columns of ``predictions``) whose RMSE on ``y`` is
    within one standard error of the lowest, the standard error being the sample standard deviation of the best
    model's RMSE per fold of ``outer`` over the square root of the number of folds (0 with a single fold)."""
    residuals = predictions - y[:, None]
    total = _rmse(residuals)
    best = int(np.argmin(total))
    folds = np.unique(outer)
    per_fold = np.array([_rmse(residuals[outer == f, best]) for f in folds])
    se = float(np.std(per_fold, ddof=1) / math.sqrt(folds.size)) if folds.size > 1 else 0.0
    members = total <= total[best] + se
    return members / members.sum()


def simplex_stack(predictions: np.ndarray, y: np.ndarray, outer: np.ndarray | None = None) -> np.ndarray:
    """Weights of ``stack``: argmin ||predictions @ w - y||^2 over w >= 0 with sum(w) = 1.

    Solved as non-negative least squares (Lawson-Hanson, so unused models get weight exactly 0) on the residuals
    ``R = predictions - y`` (equal to ``predictions @ w - y`` when the weights sum to one) with a heavy row
    ``lam * (w.sum() - 1)`` appended that holds the sum to one within ~1e-6; the weights are then rescaled to
    sum to one exactly. ``outer`` is not used (the signature of :func:`within_one_se`).
    """
    R = predictions - y[:, None]
    lam = 1e3 * (float(np.abs(R).max()) * math.sqrt(y.size) + 1.0)
    A = np.vstack([R, np.full((1, R.shape[1]), lam)])
    b = np.concatenate([np.zeros(y.size), [lam]])
    w, _ = nnls(A, b, maxiter=50 * A.shape[1])
    return w / w.sum()


def lowest_rmse(predictions: np.ndarray, y: np.ndarray, outer: np.ndarray | None = None) -> np.ndarray:
    """Weight 1 on the model with the lowest RMSE on ``y`` (ties: the first): picking one model, as a rule."""
    w = np.zeros(predictions.shape[1])
    w[int(np.argmin(_rmse(predictions - y[:, None])))] = 1.0
    return w


def single_pick(predictions: dict, y: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """The nested out-of-fold predictions of picking the single model with the lowest cv_rmse
    (:func:`lowest_rmse` under :func:`nested`): what a single model's pick competes with the ensembles by. The
    lowest of many cv_rmse is biased low by the pick itself (the winner's curse), the ensembles' nested ones are
    not."""
    usable = [p for p in predictions.values() if np.all(np.isfinite(p))]
    combined, _ = nested(lowest_rmse, np.column_stack(usable), y, outer)
    return combined


def margin(default: np.ndarray, rival: np.ndarray, y: np.ndarray, outer: np.ndarray) -> tuple[float, float]:
    """How much lower the rival's cv RMSE is than the default's (positive: the rival is better), and the standard
    error of that difference: the sample standard deviation of the paired per-fold RMSE differences over the
    outer folds over the square root of their number."""
    gain = float(_rmse(default - y) - _rmse(rival - y))
    folds = np.unique(outer)
    paired = np.array([_rmse(default[outer == f] - y[outer == f]) - _rmse(rival[outer == f] - y[outer == f])
                       for f in folds])
    return gain, float(np.std(paired, ddof=1) / math.sqrt(folds.size)) if folds.size > 1 else 0.0


RULES = {"mean-1SE": within_one_se, "stack": simplex_stack}
"""Name of each ensemble of a study and its rule: ``rule(predictions (n, M), y, outer) -> weights (M,)``."""


def nested(rule, predictions: np.ndarray, y: np.ndarray, outer: np.ndarray) -> tuple[np.ndarray, list]:
    """Out-of-fold predictions of the ensemble ``rule`` makes, fold f from weights chosen on the other folds
    (module docstring); returns them and the weights chosen for each fold (in fold order)."""
    combined = np.empty(y.size)
    chosen = []
    for f in np.unique(outer):
        train, scored = outer != f, outer == f
        w = rule(predictions[train], y[train], outer[train])
        combined[scored] = predictions[scored] @ w
        chosen.append(w)
    return combined, chosen


def combine(name: str, predictions: np.ndarray, y: np.ndarray,
            outer: np.ndarray) -> tuple[np.ndarray, list, np.ndarray]:
    """The ensemble ``name`` (a rule of :data:`RULES`) of the columns of ``predictions``: its nested out-of-fold
    predictions and weights per fold (:func:`nested`), and its weights chosen on all n (its model)."""
    rule = RULES[name]
    combined, per_fold = nested(rule, predictions, y, outer)
    return combined, per_fold, rule(predictions, y, outer)


def ensemble_stage(ctx: StudyContext, name: str, candidates: list[str], directory: Path) -> dict:
    """The ensemble ``name`` (a rule of :data:`RULES`) of the study's models ``candidates``: its nested
    out-of-fold predictions, its model (the rule on all n) saved to ``RUN/models/name``, its predictions of
    local_test from that saved model, and the members and weights of every fold."""
    summaries = {c: stage_summary(ctx.out, c) for c in candidates}
    usable = [c for c in candidates if np.all(np.isfinite(summaries[c]["cv_predictions"]))]
    predictions = np.column_stack([summaries[c]["cv_predictions"] for c in usable])
    y, outer = ctx.data.local_y, ctx.data.outer
    combined, per_fold, weights = combine(name, predictions, y, outer)
    members = {c: float(w) for c, w in zip(usable, weights) if w > 0}
    save_ensemble(directory / "model", {c: ctx.model_dir(c) for c in members}, list(members.values()),
                  rule=name, wavelengths=ctx.data.wavelengths, overwrite=True,
                  provenance={"study": str(ctx.out), "model": name, "chosen_on": "out-of-fold predictions of the "
                              f"{y.size} labelled local samples"})
    model = ctx.keep_model(name, directory / "model")
    test = load_ensemble(model).predict(ctx.data.test_absorbance) if len(ctx.data.test_ids) else np.empty(0)
    return {"cv_predictions": combined.tolist(), "test_predictions": np.asarray(test, dtype=float).tolist(),
            "n_train": int(max(summaries[c]["n_train"] for c in members)), "method": f"ensemble ({name})",
            "members": members,
            "per_fold": [{c: float(v) for c, v in zip(usable, w) if v > 0} for w in per_fold]}
