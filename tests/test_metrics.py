"""Evaluation statistics (paper section 2.4, eq. 1): hand-computed values and scikit-learn references."""


import numpy as np
import pytest
from sklearn.metrics import mean_squared_error, r2_score

from conftest import limesoda_site
from dtl_dist.errors import UserInputError
from dtl_dist.metrics import delta_rmse, evaluate, lins_ccc, mean_error, r2, rmse, rpiq

OBSERVED = [1.0, 2.0, 3.0, 4.0]
ESTIMATED = [2.0, 2.0, 4.0, 6.0]
# estimated - observed = [1, 0, 1, 2]           -> ME = 4 / 4 = 1, MSE = (1 + 0 + 1 + 4) / 4 = 1.5
# means 2.5 and 3.5; deviations [-1.5, -0.5, 0.5, 1.5] and [-1.5, -1.5, 0.5, 2.5]
# var_obs = 5 / 4 = 1.25, var_est = 11 / 4 = 2.75, cov = (2.25 + 0.75 + 0.25 + 3.75) / 4 = 1.75
# rho_c = 2 * 1.75 / (1.25 + 2.75 + (2.5 - 3.5)**2) = 3.5 / 5 = 0.7
# R2 = 1 - SS_res / SS_tot = 1 - 6 / 5 = -0.2
# quartiles of [1, 2, 3, 4] (linear): 1.75 and 3.25 -> IQR = 1.5; RPIQ = 1.5 / sqrt(1.5) = sqrt(1.5)


def test_hand_computed_values():
    assert rmse(OBSERVED, ESTIMATED) == pytest.approx(np.sqrt(1.5))
    assert mean_error(OBSERVED, ESTIMATED) == pytest.approx(1.0)
    assert lins_ccc(OBSERVED, ESTIMATED) == pytest.approx(0.7)
    assert r2(OBSERVED, ESTIMATED) == pytest.approx(-0.2)
    assert rpiq(OBSERVED, ESTIMATED) == pytest.approx(np.sqrt(1.5))
    assert evaluate(OBSERVED, ESTIMATED) == pytest.approx(
        {"n": 4, "rmse": np.sqrt(1.5), "mean_error": 1.0, "lins_ccc": 0.7, "r2": -0.2, "rpiq": np.sqrt(1.5)}
    )


def test_mean_error_is_estimated_minus_observed():
    assert mean_error([1.0, 1.0], [3.0, 3.0]) == 2.0  # overestimation is positive
    assert mean_error([3.0, 3.0], [1.0, 1.0]) == -2.0


def test_delta_rmse_eq1():
    assert delta_rmse(2.0, 1.5) == pytest.approx(25.0)  # (2 - 1.5) / 2 * 100: better than local
    assert delta_rmse(2.0, 3.0) == pytest.approx(-50.0)  # (2 - 3) / 2 * 100: worse than local
    with pytest.raises(UserInputError, match="rmse_local"):
        delta_rmse(0.0, 1.0)
    with pytest.raises(UserInputError, match="rmse_other"):
        delta_rmse(1.0, float("nan"))


def test_against_sklearn_on_real_targets():
    y = limesoda_site("UL.120")["y"]
    estimated = y * 0.8 + np.random.default_rng(0).normal(scale=0.3, size=y.size) + 0.1
    assert rmse(y, estimated) == pytest.approx(np.sqrt(mean_squared_error(y, estimated)), rel=1e-12)
    assert r2(y, estimated) == pytest.approx(r2_score(y, estimated), rel=1e-12)
    # rho_c = r * 2 sd_t sd_p / (var_t + var_p + bias^2), with Pearson r from numpy
    r = np.corrcoef(y, estimated)[0, 1]
    expected = 2 * r * y.std() * estimated.std() / (y.var() + estimated.var() + (y.mean() - estimated.mean()) ** 2)
    assert lins_ccc(y, estimated) == pytest.approx(expected, rel=1e-12)
    assert lins_ccc(y, y) == pytest.approx(1.0) and lins_ccc(y, -y + 2 * y.mean()) < 0


def test_undefined_cases():
    assert np.isnan(lins_ccc([1.0, 1.0], [1.0, 1.0]))
    assert np.isnan(r2([1.0, 1.0], [1.0, 2.0]))
    assert rpiq([1.0, 2.0], [1.0, 2.0]) == float("inf")


@pytest.mark.parametrize(
    "y_true, y_pred, message",
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0], "3 values but y_pred has 2"),
        ([1.0, np.nan, 3.0], [1.0, 2.0, 3.0], "y_true: value at row 1 is nan"),
        ([1.0, 2.0, 3.0], [1.0, 2.0, np.inf], "y_pred: value at row 2 is inf"),
        ([[1.0, 2.0], [3.0, 4.0]], [1.0, 2.0], "1-D"),
        ([1.0], [1.0], "at least 2"),
    ],
)
def test_bad_input(y_true, y_pred, message):
    for metric in (rmse, mean_error, lins_ccc, r2, rpiq, evaluate):
        with pytest.raises(UserInputError, match=message):
            metric(y_true, y_pred)
