"""Prediction intervals (issue 9): the conformal half-width and coverage by hand, and the coverage of intervals
calibrated on cross-validation residuals of simulated data with known noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dtl_dist.errors import UserInputError
from dtl_dist.linear.pls_kernel import pls1_fit_predict
from dtl_dist.nn.folds import kfold_assignment
from dtl_dist.study.intervals import coverage, half_width


def test_half_width_and_coverage_by_hand():
    residuals = [0.3, -0.1, 0.5, -0.9, 0.2, 0.7, -0.4, 0.8, -0.6, 1.0]  # |r| sorted: 0.1 .. 1.0
    assert half_width(residuals, 0.8) == pytest.approx(0.9)  # ceil(11 x 0.8) = 9th smallest
    assert half_width(residuals, 0.9) == pytest.approx(1.0)  # ceil(11 x 0.9) = 10th
    assert half_width(residuals, 0.5) == pytest.approx(0.6)  # ceil(5.5) = 6th
    assert half_width(residuals, 0.95) == math.inf  # ceil(10.45) = 11 > 10 residuals: unbounded
    assert coverage([1.0, 2.0, 3.0, 4.0], [0.5, 2.5, 2.0, 4.0], [1.5, 3.0, 3.5, 4.0]) == 0.75  # 2.0 is outside
    with pytest.raises(UserInputError, match="between 0 and 1"):
        half_width(residuals, 1.5)


@pytest.mark.parametrize("level", [0.8, 0.9])
def test_exchangeable_residuals_cover_at_the_conformal_rate(level):
    """With n calibration residuals and a new error from the same distribution, the coverage is exactly
    ceil((n + 1) level) / (n + 1) on average (>= level)."""
    rng = np.random.default_rng(0)
    n, reps = 30, 4000
    calibration = rng.normal(0, 0.4, (reps, n))
    new = rng.normal(0, 0.4, (reps, 200))
    covered = [np.mean(np.abs(e) <= half_width(r, level)) for r, e in zip(calibration, new)]
    expected = math.ceil((n + 1) * level) / (n + 1)
    assert np.mean(covered) == pytest.approx(expected, abs=0.01)
    assert np.mean(covered) >= level - 0.01


def test_pls_intervals_from_cross_validation_cover_new_samples():
    """PLS on simulated spectra (known noise): 10-fold out-of-fold residuals of 60 samples calibrate the
    interval of the model fitted on all 60; 90 % intervals cover 90 % of 2,000 new samples, within 0.03 (slightly
    more: each out-of-fold model saw 9/10 of the data, so its residuals are a little larger)."""
    rng = np.random.default_rng(3)
    beta = rng.normal(size=25) * 0.3
    coverages = []
    for _ in range(40):
        X = rng.normal(size=(2060, 25))
        y = X @ beta + rng.normal(0, 0.3, 2060)
        Xc, yc, Xt, yt = X[:60], y[:60], X[60:], y[60:]
        folds = kfold_assignment(60, 10, seed=1)
        oof = np.empty(60)
        for f in range(10):
            tr, te = folds != f, folds == f
            oof[te] = pls1_fit_predict(Xc[tr][None], yc[tr][None], Xc[te], 5, dtype="float64")[0]
        q = half_width(oof - yc, 0.9)
        estimate = pls1_fit_predict(Xc[None], yc[None], Xt, 5, dtype="float64")[0]
        coverages.append(coverage(yt, estimate - q, estimate + q))
    assert np.mean(coverages) == pytest.approx(0.9, abs=0.03)
