"""Prediction intervals calibrated on the n labelled local samples (split-conformal on cross-validation).

Every model of a study has out-of-fold predictions of the n labelled samples (each from a model rebuilt
without that sample's outer fold, :mod:`dtl_dist.nn.nested`). Their absolute residuals ``|r_i|`` calibrate a
symmetric interval ``estimate +/- q`` at level ``1 - alpha``: ``q`` is the ``ceil((n + 1)(1 - alpha))``-th
smallest ``|r_i|`` (split-conformal quantile, Vovk et al. 2005; with cross-validation residuals as in the
CV+ / jackknife+ family, Barber et al. 2021). When the residuals are exchangeable with a new sample's error,
the interval covers it with probability at least ``1 - alpha``; with n = 30 at 90 % the 28th of the 30
residuals is used, and below ``n = 1 / alpha - 1`` the interval is unbounded. The calibration never uses
local_test: its samples only measure the coverage afterwards.

A saved model carries its residuals (``calibration.json``), so ``dtl predict`` gives intervals at any level.

References
----------
Vovk V., Gammerman A., Shafer G. (2005) Algorithmic Learning in a Random World. Barber R.F. et al. (2021)
Predictive inference with the jackknife+. Ann. Statist. 49.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from dtl_dist.errors import UserInputError
from dtl_dist.library.atomic import write_json

CALIBRATION = "calibration.json"
DEFAULT_LEVEL = 0.9


def check_level(level: float) -> float:
    if not isinstance(level, (int, float)) or not 0 < level < 1:
        raise UserInputError(f"--level {level!r}: expected a coverage level strictly between 0 and 1, e.g. 0.9")
    return float(level)


def half_width(residuals, level: float) -> float:
    """The conformal half-width: the ``ceil((n + 1) level)``-th smallest absolute residual (inf if n is too small)."""
    r = np.sort(np.abs(np.asarray(residuals, dtype=float)))
    r = r[np.isfinite(r)]
    rank = math.ceil((r.size + 1) * check_level(level) - 1e-9)
    return float(r[rank - 1]) if 1 <= rank <= r.size else math.inf


def coverage(observed, lower, upper) -> float:
    """Share of ``observed`` inside ``[lower, upper]``."""
    observed = np.asarray(observed, dtype=float)
    return float(np.mean((observed >= lower) & (observed <= upper))) if observed.size else math.nan


def save_calibration(model_dir: Path, residuals, *, how: str) -> None:
    """Keep a model's calibration residuals beside it (``calibration.json``)."""
    write_json(Path(model_dir) / CALIBRATION, {"abs_residuals": sorted(float(abs(r)) for r in residuals),
                                               "n": len(residuals), "how": how})


def load_calibration(model_dir: Path) -> np.ndarray | None:
    """A model's calibration residuals, or None when it has none; an unreadable file is a UserInputError."""
    path = Path(model_dir) / CALIBRATION
    if not path.is_file():
        return None
    try:
        residuals = np.asarray(json.loads(path.read_text())["abs_residuals"], dtype=np.float64)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise UserInputError(f"{path}: unreadable ({type(exc).__name__}: {exc}); expected "
                             '{"abs_residuals": [numbers], ...} as dtl study writes it') from None
    if residuals.ndim != 1 or not np.all(np.isfinite(residuals) & (residuals >= 0)):
        raise UserInputError(f"{path}: abs_residuals must be a list of finite numbers >= 0")
    return residuals
