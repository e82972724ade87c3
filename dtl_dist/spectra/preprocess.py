"""Spectral preprocessing transformers (paper section 2.2).

The paper converts reflectance R to apparent absorbance ``log10(1/R)`` and then applies the standard normal
variate (SNV). Savitzky-Golay smoothing/derivatives, grid resampling and band trimming are here too, for
bringing libraries and sites onto one representation.

Every transformer is stateless (``fit`` only records ``n_features_in_``), composes in a
:class:`sklearn.pipeline.Pipeline`, and transforms numpy arrays or dask arrays. A dask array is transformed
lazily, block by block of rows (``map_blocks``); blocks are re-chunked to span all bands first.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import savgol_filter
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import validate_data

from dtl_dist.errors import UserInputError
from dtl_dist.spectra.grid import resample, validate_grid

UNITS = ("reflectance_fraction", "reflectance_percent", "absorbance")
"""Spectral units understood by :class:`Absorbance` (the first two) and :func:`paper_preprocessing`."""


_SAVGOL_MODES = ("interp", "mirror", "nearest", "constant", "wrap")


def _is_dask(X) -> bool:
    return hasattr(X, "map_blocks") and hasattr(X, "chunks") and hasattr(X, "dask")


def _check_finite(X, first_row: int) -> None:
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise UserInputError(
            f"spectra row {first_row + row}, column {col} is {X[row, col]}: expected a finite value (no NaN or inf)"
        )


class _RowwiseTransformer(TransformerMixin, BaseEstimator):
    """Base of the stateless transformers: each row (spectrum) is transformed on its own.

    Subclasses implement ``_transform_rows(X, first_row)`` (numpy in, numpy out; ``first_row`` is the global
    index of ``X[0]``, for error messages) and, if the number of bands changes, ``_n_features_out(n)``.
    """

    def _n_features_out(self, n_features: int) -> int:
        return n_features

    def _check_params(self, n_features: int) -> None:
        """Raise UserInputError if the parameters do not fit spectra of ``n_features`` bands."""

    def _validate(self, X, reset: bool):
        if _is_dask(X):
            if X.ndim != 2:
                raise UserInputError(f"{type(self).__name__}: expected a 2-D array of spectra, got {X.ndim}-D")
            if reset:
                self.n_features_in_ = X.shape[1]
            elif hasattr(self, "n_features_in_") and X.shape[1] != self.n_features_in_:
                raise UserInputError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input."
                )
        else:
            X = validate_data(self, X, reset=reset, dtype=(np.float64, np.float32), ensure_all_finite=False)
            _check_finite(X, 0)
        self._check_params(X.shape[1])
        return X

    def fit(self, X, y=None):
        """Check ``X`` and record ``n_features_in_``; nothing is learned.

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_bands)
        y : ignored

        Returns
        -------
        self
        """
        self._validate(X, reset=True)
        return self

    def transform(self, X):
        """Transform spectra (rows of ``X``); a dask array stays lazy and is transformed block by block.

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_bands)

        Returns
        -------
        ndarray or dask array of shape (n_samples, n_bands_out)
        """
        X = self._validate(X, reset=False)
        if not _is_dask(X):
            return self._transform_rows(X, 0)
        if X.numblocks[1] != 1:
            X = X.rechunk({1: -1})
        n_out = self._n_features_out(X.shape[1])
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float64)

        def block(x, block_info=None):
            first_row = block_info[0]["array-location"][0][0] if block_info else 0
            x = np.ascontiguousarray(x, dtype=dtype)
            _check_finite(x, first_row)
            return self._transform_rows(x, first_row)

        return X.map_blocks(block, dtype=dtype, chunks=(X.chunks[0], (n_out,)), meta=np.empty((0, 0), dtype))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class Absorbance(OneToOneFeatureMixin, _RowwiseTransformer):
    """Convert reflectance R to apparent absorbance ``log10(1/R)`` (paper section 2.2).

    Parameters
    ----------
    units : {"reflectance_fraction", "reflectance_percent"}, default="reflectance_fraction"
        Units of the input: R in (0, 1] or R in (0, 100] %.

    Raises
    ------
    UserInputError
        When a value is not finite or outside the range of ``units``; the message names its row and column.

    References
    ----------
    Shen et al. (2022), section 2.2.

    Examples
    --------
    >>> Absorbance(units="reflectance_percent").fit_transform([[10.0, 100.0]])
    array([[1., 0.]])
    """

    def __init__(self, units: str = "reflectance_fraction"):
        self.units = units

    def _check_params(self, n_features: int) -> None:
        if self.units not in UNITS[:2]:
            raise UserInputError(f"Absorbance units={self.units!r}: expected one of {UNITS[:2]}")

    def _transform_rows(self, X, first_row):
        top = 100.0 if self.units == "reflectance_percent" else 1.0
        bad = (X <= 0) | (X > top)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise UserInputError(
                f"reflectance at row {first_row + row}, column {col} is {X[row, col]}: expected a value in "
                f"(0, {top:g}] for units={self.units!r}"
            )
        return np.log10(top / X)


class SNV(OneToOneFeatureMixin, _RowwiseTransformer):
    """Standard normal variate: centre each spectrum on its mean and scale it by its standard deviation.

    The standard deviation uses ``ddof=1`` (Barnes et al., 1989). A flat spectrum (all bands equal) becomes a row of
    zeros instead of NaN.

    References
    ----------
    Shen et al. (2022), section 2.2; Barnes, Dhanoa and Lister (1989), Applied Spectroscopy 43, 772-777.

    Examples
    --------
    >>> SNV().fit_transform([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    array([[-1.,  0.,  1.],
           [ 0.,  0.,  0.]])
    """

    def _transform_rows(self, X, first_row):
        x = X.astype(np.float64)  # float64 statistics: the same result whatever the block layout
        centred = x - x.mean(axis=1, keepdims=True)
        flat = np.ptp(x, axis=1) == 0
        sd = np.where(flat, 1, x.std(axis=1, ddof=min(1, x.shape[1] - 1)))
        out = centred / sd[:, None]
        out[flat] = 0
        return out.astype(X.dtype, copy=False)


class SavitzkyGolay(OneToOneFeatureMixin, _RowwiseTransformer):
    """Savitzky-Golay smoothing or derivative along the bands (``scipy.signal.savgol_filter``).

    Parameters
    ----------
    window : int, default=11
        Number of bands in the filter window; at most the number of bands.
    polyorder : int, default=2
        Order of the fitted polynomial, less than ``window``.
    deriv : int, default=0
        Order of the derivative (0: smoothing only), at most ``polyorder``; per band, not per nm.
    mode : {"interp", "mirror", "nearest", "constant", "wrap"}, default="interp"
        How the ends of a spectrum are treated (see ``scipy.signal.savgol_filter``). "interp" fits a polynomial
        to the last ``window`` bands and needs ``window`` <= number of bands; the others pad the spectrum.

    References
    ----------
    Savitzky and Golay (1964), Analytical Chemistry 36, 1627-1639.

    Examples
    --------
    >>> SavitzkyGolay(window=3, polyorder=1, deriv=1).fit_transform([[0.0, 1.0, 2.0, 3.0]])
    array([[1., 1., 1., 1.]])
    """

    def __init__(self, window: int = 11, polyorder: int = 2, deriv: int = 0, mode: str = "interp"):
        self.window = window
        self.polyorder = polyorder
        self.deriv = deriv
        self.mode = mode

    def _check_params(self, n_features: int) -> None:
        params = (self.deriv, self.polyorder, self.window)
        integers = all(isinstance(v, (int, np.integer)) for v in params)
        if not (integers and 0 <= self.deriv <= self.polyorder < self.window):
            raise UserInputError(
                f"SavitzkyGolay window={self.window}, polyorder={self.polyorder}, deriv={self.deriv}: "
                "expected 0 <= deriv <= polyorder < window"
            )
        if self.mode not in _SAVGOL_MODES:
            raise UserInputError(f"SavitzkyGolay mode={self.mode!r}: expected one of {_SAVGOL_MODES}")
        if self.mode == "interp" and self.window > n_features:
            raise UserInputError(
                f"SavitzkyGolay window={self.window} is longer than the spectra (n_features = {n_features}); "
                "use a shorter window or another mode"
            )

    def _transform_rows(self, X, first_row):
        return savgol_filter(X, self.window, self.polyorder, deriv=self.deriv, axis=1, mode=self.mode)


class Resample(_RowwiseTransformer):
    """Linearly interpolate spectra from the ``source`` wavelength grid onto ``target`` (nm).

    Parameters
    ----------
    source : array-like of shape (n_bands,)
        Wavelengths of the input columns, strictly increasing.
    target : array-like of shape (n_bands_out,)
        Wavelengths of the output columns, inside the source range (e.g. ``make_grid()``: the paper's
        400-2500 nm every 10 nm).

    See Also
    --------
    dtl_dist.spectra.grid.resample : the interpolation itself.

    Examples
    --------
    >>> Resample(source=[400, 410, 420], target=[405, 415]).fit_transform([[1.0, 2.0, 4.0]])
    array([[1.5, 3. ]])
    """

    def __init__(self, source, target):
        self.source = source
        self.target = target

    def _n_features_out(self, n_features: int) -> int:
        return len(self.target)

    def _check_params(self, n_features: int) -> None:
        source = validate_grid(self.source, where="Resample source wavelengths")
        if source.size != n_features:
            raise UserInputError(f"Resample: spectra have {n_features} bands but source has {source.size} wavelengths")

    def _transform_rows(self, X, first_row):
        return resample(X, self.source, self.target)


class TrimBands(_RowwiseTransformer):
    """Keep the bands whose wavelength lies in ``[start, stop]`` nm.

    Parameters
    ----------
    wavelengths : array-like of shape (n_bands,)
        Wavelengths of the input columns, strictly increasing.
    start, stop : float
        Inclusive wavelength range to keep (nm).

    Examples
    --------
    >>> TrimBands(wavelengths=[400, 410, 420, 430], start=405, stop=430).fit_transform([[1.0, 2.0, 3.0, 4.0]])
    array([[2., 3., 4.]])
    """

    def __init__(self, wavelengths, start: float, stop: float):
        self.wavelengths = wavelengths
        self.start = start
        self.stop = stop

    def _keep(self) -> np.ndarray:
        wl = validate_grid(self.wavelengths, where="TrimBands wavelengths")
        return (wl >= self.start) & (wl <= self.stop)

    def _n_features_out(self, n_features: int) -> int:
        return int(self._keep().sum())

    def _check_params(self, n_features: int) -> None:
        keep = self._keep()
        if keep.size != n_features:
            raise UserInputError(f"TrimBands: spectra have {n_features} bands but wavelengths has {keep.size}")
        if not keep.any():
            raise UserInputError(f"TrimBands start={self.start}, stop={self.stop}: no wavelength in this range")

    def _transform_rows(self, X, first_row):
        return X[:, self._keep()]


def paper_preprocessing(units: str = "reflectance_fraction") -> Pipeline:
    """The paper's preprocessing (section 2.2): ``log10(1/R)`` then SNV.

    Parameters
    ----------
    units : {"reflectance_fraction", "reflectance_percent", "absorbance"}
        Units of the input spectra; for ``"absorbance"`` only SNV is applied.

    Returns
    -------
    sklearn.pipeline.Pipeline
    """
    if units not in UNITS:
        raise UserInputError(f"spectral units {units!r}: expected one of {UNITS}")
    if units == "absorbance":
        return Pipeline([("snv", SNV())])
    return Pipeline([("absorbance", Absorbance(units=units)), ("snv", SNV())])
