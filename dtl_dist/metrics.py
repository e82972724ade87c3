"""Evaluation statistics of the paper (section 2.4): RMSE, ME, Lin's concordance, R2, RPIQ and Delta RMSE (eq. 1).

All functions take observed values first, then estimates (the scikit-learn order ``y_true, y_pred``).
"""

from __future__ import annotations

import numpy as np

from dtl_dist.errors import UserInputError


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as 1-D float64 of the same length (at least 2), all finite."""
    arrays = []
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        a = np.asarray(y, dtype=np.float64)
        if a.ndim == 2 and a.shape[1] == 1:
            a = a[:, 0]
        if a.ndim != 1:
            raise UserInputError(f"{name}: expected a 1-D array of values, got shape {a.shape}")
        bad = ~np.isfinite(a)
        if bad.any():
            raise UserInputError(f"{name}: value at row {int(np.argmax(bad))} is {a[bad][0]}: expected a finite number")
        arrays.append(a)
    y_true, y_pred = arrays
    if y_true.size != y_pred.size:
        raise UserInputError(f"y_true has {y_true.size} values but y_pred has {y_pred.size}: expected the same length")
    if y_true.size < 2:
        raise UserInputError(f"expected at least 2 observed/estimated pairs, got {y_true.size}")
    return y_true, y_pred


def rmse(y_true, y_pred) -> float:
    """Root mean squared error ``sqrt(mean((y_pred - y_true)**2))`` (inaccuracy, paper section 2.4)."""
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((y_pred - y_true) ** 2)))


def mean_error(y_true, y_pred) -> float:
    """Mean error (bias) ``mean(y_pred - y_true)``, i.e. estimated minus observed (paper section 2.4).

    Positive: the model overestimates on average; negative: it underestimates.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.mean(y_pred - y_true))


def lins_ccc(y_true, y_pred) -> float:
    """Lin's (1989) concordance correlation coefficient rho_c (paper section 2.4).

    ``2 cov(t, p) / (var(t) + var(p) + (mean(t) - mean(p))**2)`` with population (ddof=0) moments. It is 1 for
    perfect agreement with the 45-degree line and NaN when both arrays are the same constant.

    References
    ----------
    Lin, L.I.-K. (1989), Biometrics 45, 255-268.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    t, p = y_true - y_true.mean(), y_pred - y_pred.mean()
    denominator = np.mean(t**2) + np.mean(p**2) + (y_true.mean() - y_pred.mean()) ** 2
    return float(2 * np.mean(t * p) / denominator) if denominator > 0 else float("nan")


def r2(y_true, y_pred) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` (as ``sklearn.metrics.r2_score``).

    NaN when y_true is constant (sklearn returns 0 or 1 there).
    """
    y_true, y_pred = _pair(y_true, y_pred)
    ss_tot = np.sum((y_true - y_true.mean()) ** 2)
    return float(1 - np.sum((y_true - y_pred) ** 2) / ss_tot) if ss_tot > 0 else float("nan")


def rpiq(y_true, y_pred) -> float:
    """Ratio of performance to interquartile distance ``(Q3 - Q1) / RMSE`` of the observations.

    Quartiles by linear interpolation (``numpy.percentile`` default, R's type 7); infinite when RMSE is 0.

    References
    ----------
    Bellon-Maurel et al. (2010), TrAC Trends in Analytical Chemistry 29, 1073-1081.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    q1, q3 = np.percentile(y_true, [25, 75])
    error = rmse(y_true, y_pred)
    return float((q3 - q1) / error) if error > 0 else float("inf")


def delta_rmse(rmse_local: float, rmse_other: float) -> float:
    """Change in RMSE relative to the local model, in percent (paper eq. 1).

    ``(rmse_local - rmse_other) / rmse_local * 100``: positive means the other model is more accurate than the
    local 1D-CNN.
    """
    if not (np.isfinite(rmse_local) and rmse_local > 0):
        raise UserInputError(f"rmse_local={rmse_local!r}: expected a positive finite RMSE of the local model")
    if not (np.isfinite(rmse_other) and rmse_other >= 0):
        raise UserInputError(f"rmse_other={rmse_other!r}: expected a non-negative finite RMSE")
    return float((rmse_local - rmse_other) / rmse_local * 100)


def evaluate(y_true, y_pred) -> dict[str, float]:
    """All statistics of section 2.4 for one set of local_test estimates.

    Returns
    -------
    dict
        ``{"n", "rmse", "mean_error", "lins_ccc", "r2", "rpiq"}``; ``n`` is the number of pairs.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    return {
        "n": int(y_true.size),
        "rmse": rmse(y_true, y_pred),
        "mean_error": mean_error(y_true, y_pred),
        "lins_ccc": lins_ccc(y_true, y_pred),
        "r2": r2(y_true, y_pred),
        "rpiq": rpiq(y_true, y_pred),
    }
