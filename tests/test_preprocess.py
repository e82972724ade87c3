"""Preprocessing transformers (paper section 2.2): scikit-learn checks, hand-computed values, dask == numpy."""

import pickle

import dask.array as da
import numpy as np
import pytest
from scipy.signal import savgol_filter
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from conftest import limesoda_site
from dtl_dist.errors import UserInputError
from dtl_dist.spectra import SNV, Absorbance, Resample, SavitzkyGolay, TrimBands, paper_preprocessing
from dtl_dist.spectra.grid import make_grid, resample


GRID_10 = np.arange(10.0)
# Checks that feed spectra with some other number of bands than the transformer's wavelength grid.
GRID_BOUND = {
    name: "defined on a fixed wavelength grid: X must have len(wavelengths) columns, the check's data do not"
    for name in [
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_estimators_dtypes",
        "check_estimators_fit_returns_self",
        "check_estimators_nan_inf",
        "check_estimators_overwrite_params",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_fit2d_1feature",
        "check_fit2d_predict1d",
        "check_fit_check_is_fitted",
        "check_fit_idempotent",
        "check_fit_score_takes_y",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_n_features_in",
        "check_n_features_in_after_fitting",
        "check_pipeline_consistency",
        "check_positive_only_tag_during_fit",
        "check_readonly_memmap_input",
        "check_transformer_data_not_an_array",
        "check_transformer_general",
        "check_transformer_preserve_dtypes",
        "check_transformers_unfitted_stateless",
    ]
}
# Checks whose random data hold reflectances <= 0 or > 100 %, which Absorbance must reject.
OUT_OF_RANGE = {
    name: "random data outside (0, 100] %: log10(1/R) is undefined there and Absorbance rejects it"
    for name in [
        "check_estimators_dtypes",
        "check_estimators_pickle",
        "check_fit_idempotent",
        "check_pipeline_consistency",
        "check_transformer_data_not_an_array",
        "check_transformer_general",
        "check_transformer_preserve_dtypes",
    ]
}


def _expected_failed(estimator):
    if isinstance(estimator, (Resample, TrimBands)):
        return GRID_BOUND
    if isinstance(estimator, Absorbance):
        return OUT_OF_RANGE
    return {}


@parametrize_with_checks(
    [
        Absorbance(units="reflectance_percent"),
        SNV(),
        SavitzkyGolay(mode="nearest"),
        SavitzkyGolay(window=3, polyorder=1, deriv=1, mode="mirror"),
        Resample(source=GRID_10, target=np.linspace(0.5, 8.5, 7)),
        TrimBands(wavelengths=GRID_10, start=2, stop=7),
    ],
    expected_failed_checks=_expected_failed,
    xfail_strict=True,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_absorbance_hand_values():
    # log10(1/0.1) = 1, log10(1/1) = 0, log10(1/0.5) = 0.30103; percent: log10(100/10) = 1, log10(100/50) = 0.30103
    assert np.allclose(Absorbance().fit_transform([[0.1, 1.0, 0.5]]), [[1.0, 0.0, np.log10(2)]])
    percent = Absorbance(units="reflectance_percent").fit_transform([[10.0, 100.0, 50.0]])
    assert np.allclose(percent, [[1.0, 0.0, np.log10(2)]])


@pytest.mark.parametrize(
    "units, X, message",
    [
        ("reflectance_fraction", [[0.5, 0.5], [0.5, 0.0]], "row 1, column 1"),
        ("reflectance_fraction", [[0.5, 1.2], [0.5, 0.5]], "row 0, column 1"),
        ("reflectance_fraction", [[0.5, 0.5], [-0.1, 0.5]], "row 1, column 0"),
        ("reflectance_percent", [[50.0, 100.5]], "row 0, column 1"),
        ("reflectance_percent", [[50.0, np.inf]], "row 0, column 1"),
    ],
)
def test_absorbance_rejects_values_outside_units(units, X, message):
    with pytest.raises(UserInputError, match=message):
        Absorbance(units=units).fit_transform(np.asarray(X))


def test_nonfinite_spectra_and_unknown_units_are_rejected():
    for est in [Absorbance(), SNV(), SavitzkyGolay(window=3, polyorder=1)]:
        with pytest.raises(UserInputError, match="row 1, column 2 is nan"):
            est.fit(np.array([[0.5, 0.5, 0.5], [0.5, 0.5, np.nan]]))
    with pytest.raises(UserInputError, match="units"):
        Absorbance(units="absorbance").fit_transform([[0.5, 0.5]])


def test_snv_hand_values_and_flat_rows():
    # row [1, 2, 3, 6]: mean 3, deviations [-2, -1, 0, 3], sample sd sqrt(14/3)
    out = SNV().fit_transform([[1.0, 2.0, 3.0, 6.0], [0.1, 0.1, 0.1, 0.1]])
    assert np.allclose(out[0], np.array([-2, -1, 0, 3]) / np.sqrt(14 / 3))
    assert np.array_equal(out[1], np.zeros(4))
    assert np.isclose(out[0].mean(), 0) and np.isclose(out[0].std(ddof=1), 1)


def test_savitzky_golay_matches_scipy_and_rejects_bad_window():
    X = np.random.default_rng(0).normal(size=(5, 40))
    out = SavitzkyGolay(window=7, polyorder=2, deriv=1).fit_transform(X)
    assert np.allclose(out, savgol_filter(X, 7, 2, deriv=1, axis=1))
    with pytest.raises(UserInputError, match="window=51"):
        SavitzkyGolay(window=51).fit_transform(X)
    with pytest.raises(UserInputError, match="polyorder"):
        SavitzkyGolay(window=5, polyorder=5).fit_transform(X)
    with pytest.raises(UserInputError, match="window=5.5"):
        SavitzkyGolay(window=5.5).fit_transform(X)


def test_resample_and_trim_on_real_spectra():
    data = limesoda_site("UL.120")
    wl, X = data["wavelengths"], data["X"].astype(np.float32)
    target = make_grid(500, 2400, 10)
    out = Resample(source=wl, target=target).fit_transform(X)
    assert out.shape == (len(X), target.size) and out.dtype == np.float32
    assert np.allclose(out, resample(X, wl, target))
    trimmed = TrimBands(wavelengths=wl, start=1000, stop=1100).fit_transform(X)
    keep = (wl >= 1000) & (wl <= 1100)
    assert np.array_equal(trimmed, X[:, keep])
    with pytest.raises(UserInputError, match="bands"):
        TrimBands(wavelengths=wl[:-1], start=1000, stop=1100).fit(X)
    with pytest.raises(UserInputError, match="no wavelength"):
        TrimBands(wavelengths=wl, start=3000, stop=3100).fit(X)


def test_paper_preprocessing_is_absorbance_then_snv():
    X = limesoda_site("UL.120")["X"]
    expected = SNV().fit_transform(np.log10(100 / X))
    assert np.allclose(paper_preprocessing("reflectance_percent").fit_transform(X), expected)
    assert [name for name, _ in paper_preprocessing("absorbance").steps] == ["snv"]
    with pytest.raises(UserInputError, match="units"):
        paper_preprocessing("transmittance")


def _real_spectra():
    data = limesoda_site("UL.120")
    return data["X"].astype(np.float32), data["wavelengths"]


@pytest.mark.parametrize(
    "make",
    [
        lambda wl: Absorbance(units="reflectance_percent"),
        lambda wl: SNV(),
        lambda wl: SavitzkyGolay(window=11, polyorder=2, deriv=1),
        lambda wl: Resample(source=wl, target=make_grid(500, 2400, 10)),
        lambda wl: TrimBands(wavelengths=wl, start=1000, stop=2000),
        lambda wl: make_pipeline(Absorbance(units="reflectance_percent"), SNV(), SavitzkyGolay()),
    ],
)
def test_dask_blocks_equal_numpy(make):
    X, wl = _real_spectra()
    # rows in blocks of 25 (the last one shorter) and bands split too: the transformer re-chunks the bands
    lazy = make(wl).fit(da.from_array(X, chunks=(25, 1000))).transform(da.from_array(X, chunks=(25, 1000)))
    assert isinstance(lazy, da.Array) and lazy.chunks[0] == (25, 25, 25, 25, 20)
    expected = make(wl).fit_transform(X)
    result = lazy.compute()
    assert result.dtype == expected.dtype
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-6)


def test_dask_error_names_global_row():
    X, _ = _real_spectra()
    X = X.copy()
    X[57, 3] = 0.0
    lazy = Absorbance(units="reflectance_percent").transform(da.from_array(X, chunks=(25, -1)))
    with pytest.raises(UserInputError, match="row 57, column 3"):
        lazy.compute()


def test_clone_pickle_and_feature_count():
    X, wl = _real_spectra()
    grid_bound = [Resample(source=wl, target=make_grid(500, 600, 10)), TrimBands(wavelengths=wl, start=500, stop=600)]
    for est in [SNV(), *grid_bound]:
        fitted = clone(est).fit(X)
        assert fitted.n_features_in_ == X.shape[1]
        again = pickle.loads(pickle.dumps(fitted))
        assert np.array_equal(again.transform(X), fitted.transform(X))
        with pytest.raises(ValueError, match="features"):
            fitted.transform(X[:, :-1])
