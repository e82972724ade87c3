"""Memory-based learning (MBL): a local PLS for every spectrum to predict (a baseline of the study).

As resemble's ``mbl`` (Ramirez-Lopez et al. 2013), cited by the paper among the localisation methods that
DTL is compared with: the reference set (library plus labelled local samples) is projected on a global PLS
(components by cross-validation); each spectrum to predict takes its ``k`` nearest reference spectra in the
standardised score space (Mahalanobis distance) and a weighted-average PLS (WAPLS, Shenk et al. 1997) fitted
on them predicts it: the predictions with ``a = min_ncomp .. max_ncomp`` components are averaged with weights
``1 / (s_a g_a)``, ``s_a`` the RMS of the spectrum's reconstruction residual with ``a`` components and ``g_a``
the RMS of the ``a``-component regression coefficients. Every local PLS of a batch is fitted in one call of
the batched kernel (:mod:`dtl_dist.linear.pls_kernel`).

References
----------
Ramirez-Lopez L. et al. (2013) The spectrum-based learner: a new local approach for modeling soil vis-NIR
spectra of complex datasets. Geoderma 195-196. Shenk J.S., Westerhaus M.O., Berzaghi P. (1997) Investigation
of a LOCAL calibration procedure for near infrared instruments. J. Near Infrared Spectrosc. 5.
"""

from __future__ import annotations

import numpy as np
import torch

from dtl_dist.errors import UserInputError
from dtl_dist.linear.pls_kernel import pls1_cv_ncomp, pls1_fit

NEIGHBOURS = (50, 100, 150, 200)
"""Neighbourhood sizes tried by :meth:`MBL.choose_k` (those no larger than the reference set)."""


class MBL:
    """Memory-based learning on a reference set.

    Parameters
    ----------
    k : neighbours per prediction.
    min_ncomp, max_ncomp : components of the weighted-average local PLS (capped by ``k - 2``).
    max_global_ncomp : largest number of global PLS components tried for the neighbour search.

    Attributes
    ----------
    X_, y_ : the reference spectra (preprocessed) and values.
    x_mean_, rotations_, score_scale_ : the global PLS projection and the scale of its scores.
    """

    def __init__(self, k: int = 100, *, min_ncomp: int = 3, max_ncomp: int = 15, max_global_ncomp: int = 20):
        self.k = k
        self.min_ncomp = min_ncomp
        self.max_ncomp = max_ncomp
        self.max_global_ncomp = max_global_ncomp

    def fit(self, X, y) -> "MBL":
        """Keep the reference set and fit the global PLS of the neighbour search (components by 10-fold CV)."""
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or y.shape != (X.shape[0],) or X.shape[0] < self.min_ncomp + 3:
            raise UserInputError(f"MBL: expected a reference set of at least {self.min_ncomp + 3} spectra with "
                                 f"one value each, got spectra {X.shape} and values {y.shape}")
        ncomp, _ = pls1_cv_ncomp(X, y, min(self.max_global_ncomp, X.shape[0] // 2), folds=min(10, X.shape[0]))
        fit = pls1_fit(X[None], y[None], ncomp, dtype=torch.float64)
        self.x_mean_ = fit.x_mean[0].numpy()
        self.rotations_ = fit.x_rotations[0].numpy()
        scores = (X - self.x_mean_) @ self.rotations_
        self.score_scale_ = np.where(scores.std(0) > 0, scores.std(0), 1.0)
        self.X_, self.y_ = X, y
        return self

    def _scores(self, X) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) - self.x_mean_) @ self.rotations_ / self.score_scale_

    def neighbours(self, X, k: int | None = None, exclude=None) -> np.ndarray:
        """Rows of the reference set nearest to each spectrum of ``X`` (nearest first), shape ``(q, k)``;
        ``exclude[i]`` (a reference row, or -1) is left out of spectrum ``i``'s neighbours."""
        k = self.k if k is None else k
        a, b = self._scores(X), self._scores(self.X_)
        d = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
        if exclude is not None:
            rows = np.flatnonzero(np.asarray(exclude) >= 0)
            d[rows, np.asarray(exclude)[rows]] = np.inf
        return np.argsort(d, axis=1, kind="stable")[:, :k]

    def predict(self, X, k: int | None = None, exclude=None) -> np.ndarray:
        """Weighted-average local PLS prediction of each spectrum from its ``k`` nearest reference spectra."""
        X = np.asarray(X, dtype=np.float64)
        if len(X) == 0:
            return np.empty(0)
        k = min(self.k if k is None else k, len(self.y_) - (exclude is not None))
        rows = self.neighbours(X, k, exclude)
        top = max(1, min(self.max_ncomp, k - 2))
        low = min(self.min_ncomp, top)
        fit = pls1_fit(self.X_[rows], self.y_[rows], top, dtype=torch.float64)
        Xc = torch.as_tensor(X)[:, None, :] - fit.x_mean[:, None, :]  # (q, 1, p)
        R = fit.x_rotations
        scores = (Xc @ R)[:, 0]  # (q, A)
        predictions = fit.y_mean[:, None] + torch.cumsum(scores * fit.y_loadings, 1)
        reconstructed = torch.cumsum(scores[:, None, :] * fit.x_loadings, 2)  # (q, p, A)
        s = (Xc[:, 0, :, None] - reconstructed).square().mean(1).sqrt()
        g = torch.cumsum(R * fit.y_loadings[:, None, :], 2).square().mean(1).sqrt()
        weights = 1 / (s * g).clamp_min(torch.finfo(torch.float64).tiny)
        weights[:, : low - 1] = 0
        return ((weights * predictions).sum(1) / weights.sum(1)).numpy()

    def choose_k(self, rows, candidates=NEIGHBOURS) -> tuple[int, dict]:
        """The neighbourhood size with the lowest RMSE when each reference row in ``rows`` (the labelled local
        samples) is predicted without itself; returns it and the RMSE of every size tried."""
        rows = np.asarray(rows, dtype=np.int64)
        sizes = [c for c in candidates if c <= len(self.y_) - 1] or [len(self.y_) - 1]
        rmse = {c: float(np.sqrt(np.mean((self.predict(self.X_[rows], c, exclude=rows) - self.y_[rows]) ** 2)))
                for c in sizes}
        return min(rmse, key=rmse.get), rmse
