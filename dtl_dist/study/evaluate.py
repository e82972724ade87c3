"""The study's results: a model recommended from the n labelled samples, then test metrics (paper 2.4, eq. 1).

The paper picked its best model by the test RMSE; a practitioner has only the n labelled local samples. The
recommendation (:func:`recommend`) reads nothing but each model's ``cv_rmse``: the RMSE of its out-of-fold
predictions of the n labelled samples on the shared outer folds (for an ensemble, its nested out-of-fold
predictions, :mod:`dtl_dist.study.ensembles`), among the candidates: every single model and the ensembles of
them, or only those that use no library where the site lies outside it (:func:`dtl_dist.study.models.candidates`).
The stack is recommended unless the single model with the lowest cv_rmse (weighed by the nested cv RMSE of that
pick: the lowest of 14 cv_rmse is biased low by the pick itself) or mean-1SE beats it by more than one standard
error (written to ``choice.json``). Only then are the N - n local_test samples read, to report every model's
RMSE, mean error (estimated - observed), Lin's CCC, R2, RPIQ and dRMSE against the local 1D-CNN.

Every model also gets a prediction interval at ``level`` calibrated on its out-of-fold residuals of the n
labelled samples (:mod:`dtl_dist.study.intervals`); local_test measures its coverage and width.

Outputs: ``metrics.csv`` (one row per model and a row ``recommended`` repeating the recommended model's
figures, named in ``recommended_model``; ``failed_trials``: a 1D-CNN search's trials that raised or whose
worker died past its retries, left out of the choice), ``predictions.csv`` (local_test: sample id, observed,
one column per model and its interval ``NAME_lo``, ``NAME_hi``), ``cv_predictions.csv`` (the n labelled samples: outer fold, observed, out-of-fold predictions) and
``observed_vs_estimated.png`` (paper Fig. 4b for every model).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from dtl_dist.library.atomic import atomic_path, write_json
from dtl_dist.metrics import delta_rmse, evaluate, rmse
from dtl_dist.study.context import MODELS_DIR
from dtl_dist.study.data import StudyData
from dtl_dist.study.figures import observed_vs_estimated
from dtl_dist.study.intervals import DEFAULT_LEVEL, coverage, half_width, save_calibration
from dtl_dist.study.ensembles import margin, single_pick
from dtl_dist.study.models import MODELS, REFERENCE

COLUMNS = ("model", "rmse", "me", "ccc", "r2", "rpiq", "delta_rmse_pct", "cv_rmse", "n_train", "failed_trials",
           "coverage", "interval_width", "recommended_model")
RECOMMENDED = "recommended"
CHOICE = "choice.json"
"""How the recommendation was made: the nested cv RMSE of the single pick and of each ensemble, and each rival's
margin against the default."""
DEFAULT = "stack"
"""The model recommended unless a rival beats it by more than the noise (:func:`recommend`): the stack is the
super learner (van der Laan, Polley & Hubbard 2007), whose cross-validated risk comes close to that of the best
combination of the candidates, so to the best of them, as the samples grow; on 30 samples the nested cv RMSEs
of the candidates differ by about their noise, and one pick among them would be close to a random one."""


def cv_rmse(local_y: np.ndarray, predictions: dict) -> dict:
    """Each model's RMSE over its out-of-fold predictions of the n labelled samples."""
    return {name: rmse(local_y, np.asarray(p, dtype=float)) for name, p in predictions.items()}


def rivals(singles: dict, ensembles: dict, y: np.ndarray, outer: np.ndarray) -> tuple[str, dict]:
    """The candidates of :func:`recommend` from the out-of-fold predictions of the single models ``singles`` and
    the nested ones of the ``ensembles`` (name -> predictions): the name of the single model with the lowest
    cv_rmse, and a dict of it (entered with the nested predictions of that pick,
    :func:`dtl_dist.study.ensembles.single_pick`) and every ensemble."""
    scores = cv_rmse(y, singles)
    best = min((n for n in singles if math.isfinite(scores[n])), key=scores.get)
    return best, {best: single_pick(singles, y, outer), **ensembles}


def recommend(candidates: dict, y: np.ndarray, outer: np.ndarray, default: str = DEFAULT) -> tuple[str, dict]:
    """The model to use, from the nested out-of-fold predictions of the n labelled samples ``candidates`` (name ->
    predictions): the single model with the lowest cv_rmse, entered with the nested predictions of that pick
    (:func:`dtl_dist.study.ensembles.single_pick`), and each ensemble. ``default`` stands unless a rival's nested cv
    RMSE is lower by more than one standard error of the paired difference (:func:`dtl_dist.study.ensembles.margin`);
    then the rival with the lowest. Without a finite ``default``: the lowest. Returns the name and, per rival, its
    (gain, standard error) against the default."""
    finite = {name: p for name, p in candidates.items() if np.all(np.isfinite(p))}
    scores = {name: rmse(y, p) for name, p in finite.items()}
    if default not in finite:
        return min(scores, key=scores.get), {}
    margins = {name: margin(finite[default], p, y, outer) for name, p in finite.items() if name != default}
    better = {name: scores[name] for name, (gain, se) in margins.items() if gain > se}
    return (min(better, key=better.get) if better else default), margins


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def write_results(data: StudyData, summaries: dict, out: Path, target: str = "soc",
                  level: float = DEFAULT_LEVEL, members: list[str] | None = None) -> pd.DataFrame:
    """Recommend a model (the single pick among ``members``, default every single model, or an ensemble of them),
    calibrate every model's interval, then evaluate them on local_test; write the tables (module docstring) and
    each model's calibration residuals beside it (``RUN/models/NAME``)."""
    names = list(summaries)
    scores = cv_rmse(data.local_y, {n: summaries[n]["cv_predictions"] for n in names})
    ensembles = [m.name for m in MODELS if m.make == "ensemble" and m.name in summaries]
    members = [n for n in names if n not in ensembles] if members is None else list(members)
    best, candidates = rivals({n: np.asarray(summaries[n]["cv_predictions"], dtype=float) for n in members},
                              {e: np.asarray(summaries[e]["cv_predictions"], dtype=float) for e in ensembles},
                              data.local_y, data.outer)
    chosen, margins = recommend(candidates, data.local_y, data.outer)  # decided before local_test is read
    write_json(out / CHOICE, {"recommended": chosen, "default": DEFAULT, "candidates": members, "single_pick": best,
                              "single_pick_cv": rmse(data.local_y, candidates[best]),
                              "ensembles_cv": {e: scores[e] for e in ensembles},
                              "margins": {n: {"gain": g, "se": se} for n, (g, se) in margins.items()}})
    residuals = {n: np.asarray(summaries[n]["cv_predictions"], dtype=float) - data.local_y for n in names}
    for name in names:
        save_calibration(out / MODELS_DIR / name, residuals[name],
                         how=f"out-of-fold predictions of the {data.local_y.size} labelled local samples "
                             f"({data.n_outer} outer folds)")
    widths = {n: half_width(residuals[n], level) for n in names}  # also before local_test is read
    observed = data.test_y(target)
    rows, bounds = [], {}
    for name in names:
        predicted = np.asarray(summaries[name]["test_predictions"], dtype=float)
        bounds[name] = (predicted - widths[name], predicted + widths[name])
        m = evaluate(observed, predicted) if observed.size >= 2 else {}
        rows.append({"model": name, "rmse": m.get("rmse", math.nan), "me": m.get("mean_error", math.nan),
                     "ccc": m.get("lins_ccc", math.nan), "r2": m.get("r2", math.nan), "rpiq": m.get("rpiq", math.nan),
                     "cv_rmse": scores[name], "n_train": summaries[name]["n_train"],
                     "failed_trials": summaries[name].get("trials", {}).get("error", 0),
                     "coverage": coverage(observed, *bounds[name]), "interval_width": 2 * widths[name],
                     "recommended_model": ""})
    reference = next(r["rmse"] for r in rows if r["model"] == REFERENCE)
    for row in rows:
        row["delta_rmse_pct"] = delta_rmse(reference, row["rmse"]) if math.isfinite(reference) and \
            math.isfinite(row["rmse"]) else math.nan
    best = next(r for r in rows if r["model"] == chosen)
    rows.append({**best, "model": RECOMMENDED, "recommended_model": chosen})
    metrics = pd.DataFrame(rows, columns=list(COLUMNS))
    _write_csv(out / "metrics.csv", metrics)
    predictions = pd.DataFrame({"sample_id": data.test_ids, "observed": observed})
    for name in names:
        predictions[name] = summaries[name]["test_predictions"]
    for name in names:
        predictions[f"{name}_lo"], predictions[f"{name}_hi"] = bounds[name]
    _write_csv(out / "predictions.csv", predictions)
    cv = pd.DataFrame({"sample_id": data.local_ids, "outer_fold": data.outer, "observed": data.local_y})
    for name in names:
        cv[name] = summaries[name]["cv_predictions"]
    _write_csv(out / "cv_predictions.csv", cv)
    if observed.size >= 2:
        observed_vs_estimated(out / "observed_vs_estimated.png", observed, {n: predictions[n] for n in names},
                              title=f"local_test (N - n = {observed.size}); framed: {chosen}, recommended on "
                                    "the n labelled samples", highlight=chosen)
    return metrics
