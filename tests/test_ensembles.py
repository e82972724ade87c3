"""Ensembles of a study's models (:mod:`dtl_dist.study.ensembles`): the one-standard-error mean and the simplex
stack against hand-computed and brute-force references, the nested choice that never reads the fold it scores,
and an ensemble directory served by ``dtl predict`` as the weighted sum of its members."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from dtl_dist.library.ingest import Source
from dtl_dist.library.model_files import model_format
from dtl_dist.linear.saved import load_linear, save_pls
from dtl_dist.study.ensemble_model import ENSEMBLE_FORMAT, save_ensemble
from dtl_dist.study.ensembles import nested, simplex_stack, within_one_se
from dtl_dist.study.intervals import save_calibration
from dtl_dist.study.predict import load_any, predict_file


def test_one_standard_error_mean_by_hand():
    # 4 samples in 2 folds, observed 0. Model 1 errs 0, 0.4 / 0, 0: RMSE 0.2 (the lowest), per fold
    # sqrt(0.08) = 0.28284 and 0, SE = sd(0.28284, 0) / sqrt(2) = 0.2 / sqrt(2) = 0.14142. Model 0 errs 0.1, 0.3
    # in both folds: RMSE sqrt(0.05) = 0.2236 <= 0.2 + 0.1414, a member; model 2 (RMSE 1) is not.
    y = np.zeros(4)
    outer = np.array([0, 0, 1, 1])
    P = np.array([[0.1, 0.0, 1.0], [0.3, 0.4, 1.0], [0.1, 0.0, 1.0], [0.3, 0.0, 1.0]])
    np.testing.assert_allclose(within_one_se(P, y, outer), [0.5, 0.5, 0.0])
    P[1, 1] = 0.0  # model 1 perfect: SE 0, model 0 no longer within
    np.testing.assert_allclose(within_one_se(P, y, outer), [0.0, 1.0, 0.0])


def test_simplex_stack_is_the_best_convex_combination():
    """Against a brute-force search over a fine grid of the 3-model simplex."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=24)
    P = np.column_stack([y + rng.normal(0, s, 24) for s in (0.3, 0.5, 0.8)]) + np.array([0.2, -0.3, 0.0])
    w = simplex_stack(P, y)
    assert np.all(w >= 0) and w.sum() == pytest.approx(1, abs=1e-12)
    grid = np.linspace(0, 1, 401)
    best = min(np.sum((P @ np.array([a, b, 1 - a - b]) - y) ** 2)
               for a, b in itertools.product(grid, grid) if a + b <= 1 + 1e-12)
    assert np.sum((P @ w - y) ** 2) <= best + 1e-9
    # a model worse everywhere than another gets weight exactly 0
    P = np.column_stack([y + 0.1, y + 5.0])
    np.testing.assert_array_equal(simplex_stack(P, y), [1.0, 0.0])


@pytest.mark.parametrize("rule", [within_one_se, simplex_stack])
def test_the_choice_for_a_fold_never_reads_that_fold(rule):
    """Changing fold f's predictions and SOC leaves fold f's weights unchanged (and every other fold's
    predictions of the ensemble unchanged where their weights are)."""
    rng = np.random.default_rng(1)
    y = rng.normal(2, 0.5, 30)
    outer = np.arange(30) % 5
    P = y[:, None] + rng.normal(0, [0.2, 0.3, 0.4, 0.6], (30, 4))
    combined, weights = nested(rule, P, y, outer)
    changed_P, changed_y = P.copy(), y.copy()
    changed_P[outer == 2] += rng.normal(0, 3, (6, 4))
    changed_y[outer == 2] += 10
    again, weights_again = nested(rule, changed_P, changed_y, outer)
    np.testing.assert_array_equal(weights[2], weights_again[2])
    np.testing.assert_allclose(again[outer == 2], changed_P[outer == 2] @ weights[2])
    np.testing.assert_allclose(combined[outer == 2], P[outer == 2] @ weights[2])


def test_an_ensemble_directory_predicts_the_weighted_sum_of_its_members(tmp_path):
    rng = np.random.default_rng(2)
    wl = np.arange(400, 2500, 100.0)
    members = {}
    for name in ("a", "b"):
        members[name] = save_pls(tmp_path / name, x_mean=rng.normal(size=wl.size), coef=rng.normal(size=wl.size),
                                 intercept=rng.normal(), ncomp=3, wavelengths=wl)
    path = save_ensemble(tmp_path / "ens", members, [0.25, 0.75], rule="stack", wavelengths=wl)
    save_calibration(path, [0.1, -0.2, 0.3, -0.4, 0.5], how="test")
    assert model_format(path) == ENSEMBLE_FORMAT
    X = rng.uniform(0.2, 1.5, (7, wl.size))
    expected = 0.25 * load_linear(tmp_path / "a").predict(X) + 0.75 * load_linear(tmp_path / "b").predict(X)
    np.testing.assert_allclose(load_any(path).predict(X), expected, rtol=1e-12)
    spectra = pd.DataFrame(X, columns=[f"{w:g}" for w in wl])
    spectra.insert(0, "id", [f"s{i}" for i in range(7)])
    spectra.to_csv(tmp_path / "new.csv", index=False)
    predict_file(path, Source(tmp_path / "new.csv", units="absorbance", id_column="id"), tmp_path / "soc.csv",
                 level=0.5, progress=False)
    out = pd.read_csv(tmp_path / "soc.csv")
    np.testing.assert_allclose(out.soc, expected, rtol=1e-5)
    np.testing.assert_allclose(out.soc_hi - out.soc, 0.3, rtol=1e-5)  # the ceil(6 * 0.5) = 3rd smallest |r|



def test_the_stack_stands_unless_a_rival_beats_it_by_more_than_one_standard_error():
    from dtl_dist.study.ensembles import margin, single_pick
    from dtl_dist.study.evaluate import recommend

    y = np.zeros(4)
    outer = np.array([0, 0, 1, 1])
    stack = np.array([1.0, 1.0, 1.0, 1.0])  # RMSE 1 on each fold
    # rival: per-fold RMSE 0.5 and 0.7, overall sqrt((0.25 + 0.49) / 2); paired per-fold differences 0.5 and 0.3,
    # standard error sd(0.5, 0.3) / sqrt(2) = 0.1414 / 1.4142 = 0.1
    rival = np.array([0.5, 0.5, 0.7, 0.7])
    gain, se = margin(stack, rival, y, outer)
    assert gain == pytest.approx(1 - np.sqrt(0.37)) and se == pytest.approx(0.1)
    assert recommend({"a": rival, "stack": stack}, y, outer)[0] == "a"  # lower by 0.39 > 0.1
    close = np.array([1.0, 1.0, 0.6, 0.6])  # lower by 1 - sqrt(0.68) = 0.175, standard error sd(0, 0.4) / sqrt(2) = 0.2
    chosen, margins = recommend({"a": close, "stack": stack}, y, outer)
    assert chosen == "stack" and margins["a"] == pytest.approx((1 - np.sqrt(0.68), 0.2))
    # of two rivals beyond the noise, the lowest; without a finite stack, the lowest of all
    assert recommend({"a": rival, "mean-1SE": rival * 0.9, "stack": stack}, y, outer)[0] == "mean-1SE"
    assert recommend({"a": close, "stack": np.full(4, np.nan)}, y, outer)[0] == "a"
    # 4 samples, 2 folds: on fold 1 model x is the better (errors 0 vs 1), so fold 0 is predicted by x (errors 2, 2);
    # on fold 0 model z is the better (errors 0 vs 2), so fold 1 is predicted by z (errors 1, 1)
    y = np.zeros(4)
    outer = np.array([0, 0, 1, 1])
    predictions = {"x": np.array([2.0, 2.0, 0.0, 0.0]), "z": np.array([0.0, 0.0, 1.0, 1.0])}
    np.testing.assert_array_equal(single_pick(predictions, y, outer), [2.0, 2.0, 1.0, 1.0])
