"""PLS regression estimator (scikit-learn API) on the batched torch kernel."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from dtl_dist.errors import UserInputError
from dtl_dist.linear.pls_kernel import pls1_cv_ncomp, pls1_fit


class PLSRegressor(RegressorMixin, BaseEstimator):
    """Partial least squares regression of one response (PLS1) on centred, unscaled spectra.

    Equals ``sklearn.cross_decomposition.PLSRegression(n_components, scale=False)``, fitted with the
    batched kernel :func:`dtl_dist.linear.pls1_fit` in the chosen precision and device.

    Parameters
    ----------
    n_components : int or "cv", default=10
        Number of PLS components, clipped at fit time to ``min(n_samples - 1, n_features)`` (the rank
        bound of centred spectra). ``"cv"`` chooses it by ``cv_folds``-fold cross-validation among
        ``1 .. max_components`` with :func:`dtl_dist.linear.pls1_cv_ncomp`.
    dtype : {"float64", "float32"}, default="float64"
        Working precision.
    device : str, default="cpu"
        Torch device of the fit, e.g. ``"cuda"``.
    max_components : int, default=20
        Largest number of components tried when ``n_components="cv"``.
    cv_folds : int, default=10
        Folds of the cross-validation when ``n_components="cv"`` (at most ``n_samples``).
    random_state : int, default=0
        Seed of the fold shuffle when ``n_components="cv"``.

    Attributes
    ----------
    n_components_ : int
        Number of components used.
    cv_rmse_ : ndarray of shape (max_components,)
        Cross-validated RMSE for ``1 .. max_components`` components (only with ``n_components="cv"``).
    x_mean_ : ndarray of shape (n_features,)
    intercept_ : float
        Mean of the training response.
    coef_ : ndarray of shape (n_features,)
        Prediction is ``(X - x_mean_) @ coef_ + intercept_``.
    x_weights_, x_loadings_, x_rotations_ : ndarray of shape (n_features, n_components_)
    y_loadings_ : ndarray of shape (n_components_,)
    n_features_in_ : int

    References
    ----------
    Shen et al. (2022), section 2.3.2 (PLSR in RS-LOCAL-v2.0) and section 2.4 (10-fold cross-validation).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 8))
    >>> y = X @ rng.normal(size=8)
    >>> model = PLSRegressor(n_components=8).fit(X, y)
    >>> bool(np.allclose(model.predict(X), y))
    True
    """

    def __init__(
        self, n_components=10, *, dtype="float64", device="cpu", max_components=20, cv_folds=10, random_state=0
    ):
        self.n_components = n_components
        self.dtype = dtype
        self.device = device
        self.max_components = max_components
        self.cv_folds = cv_folds
        self.random_state = random_state

    def fit(self, X, y):
        """Fit the PLS model to spectra ``X`` (n_samples, n_features) and response ``y`` (n_samples,)."""
        if self.dtype not in ("float64", "float32"):
            raise UserInputError(f"PLSRegressor dtype={self.dtype!r}: expected 'float64' or 'float32'")
        X, y = validate_data(self, X, y, dtype=np.dtype(self.dtype), y_numeric=True, ensure_min_samples=2)
        bound = min(X.shape[0] - 1, X.shape[1])
        if self.n_components == "cv":
            folds = min(self.cv_folds, X.shape[0])
            best, self.cv_rmse_ = pls1_cv_ncomp(
                X, y, self.max_components, folds, self.random_state, dtype=self.dtype, device=self.device
            )
            self.n_components_ = min(best, bound)
        elif isinstance(self.n_components, (int, np.integer)) and not isinstance(self.n_components, bool):
            if self.n_components < 1:
                raise UserInputError(f"PLSRegressor n_components={self.n_components}: expected >= 1 or 'cv'")
            self.n_components_ = min(int(self.n_components), bound)
        else:
            raise UserInputError(f"PLSRegressor n_components={self.n_components!r}: expected a positive int or 'cv'")
        fit = pls1_fit(X[None], y[None], self.n_components_, dtype=self.dtype, device=self.device)
        self.x_mean_ = fit.x_mean[0].cpu().numpy()
        self.intercept_ = float(fit.y_mean[0])
        self.coef_ = fit.coef[0].cpu().numpy()
        self.x_weights_ = fit.weights[0].cpu().numpy()
        self.x_loadings_ = fit.x_loadings[0].cpu().numpy()
        self.x_rotations_ = fit.x_rotations[0].cpu().numpy()
        self.y_loadings_ = fit.y_loadings[0].cpu().numpy()
        return self

    def predict(self, X):
        """Predicted response of spectra ``X`` (n_samples, n_features), computed in float64."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return (X - self.x_mean_) @ self.coef_.astype(np.float64) + self.intercept_
