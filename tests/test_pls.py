"""Batched PLS1 kernel and PLSRegressor against scikit-learn's PLSRegression(scale=False) on real spectra."""


import numpy as np
import pytest
import torch
from sklearn.cross_decomposition import PLSRegression
from sklearn.model_selection import KFold
from sklearn.utils.estimator_checks import parametrize_with_checks

from conftest import limesoda_site
from dtl_dist.errors import UserInputError
from dtl_dist.linear import (
    PLSRegressor,
    pls1_cv_ncomp,
    pls1_fit,
    pls1_fit_predict,
    pls1_predict,
    pls1_transform,
)
from dtl_dist.spectra.grid import make_grid, resample

TOL = {"float64": 1e-8, "float32": 1e-4}
"""Largest difference from scikit-learn (float64), relative to the largest reference value."""


@pytest.fixture(scope="module")
def library():
    """SNV absorbance of the four LimeSoDa vis-NIR sites pooled on 420-2500 nm / 10 nm (209 bands), and carbon."""
    sites = [limesoda_site(s) for s in ("CV.98", "SC.93", "SL.125", "UL.120")]
    absorbance = np.vstack([resample(np.log10(100 / s["X"]), s["wavelengths"], make_grid(420, 2500, 10))
                            for s in sites])
    spectra = (absorbance - absorbance.mean(1, keepdims=True)) / absorbance.std(1, keepdims=True)
    return spectra, np.concatenate([s["y"] for s in sites])


def subsets(spectra, y, B, m, bands, seed):
    rng = np.random.default_rng(seed)
    cols = np.linspace(0, spectra.shape[1] - 1, bands).round().astype(int)
    idx = np.stack([rng.choice(len(y), m, replace=False) for _ in range(B)])
    new = rng.choice(len(y), (B, 7), replace=False)
    return spectra[idx][:, :, cols], y[idx], spectra[new][:, :, cols]


def sklearn_fit(X, y, ncomp):
    return PLSRegression(n_components=ncomp, scale=False).fit(X, y)


def assert_close(actual, expected, dtype):
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOL[dtype] * np.abs(expected).max())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    ("B", "m", "bands", "ncomp"), [(5, 100, 209, 10), (3, 60, 43, 15), (4, 30, 209, 5), (2, 150, 43, 1), (3, 100, 209, 20)]
)
def test_predictions_and_scores_match_sklearn(library, dtype, B, m, bands, ncomp):
    X, y, X_each = subsets(*library, B, m, bands, seed=B + m)
    X_shared = X_each[0]
    fit = pls1_fit(X.astype(dtype), y.astype(dtype), ncomp)
    shared = pls1_predict(fit, X_shared.astype(dtype))
    each = pls1_predict(fit, X_each.astype(dtype))
    scores = pls1_transform(fit, X_each.astype(dtype))
    for b in range(B):
        ref = sklearn_fit(X[b], y[b], ncomp)
        assert_close(shared[b], ref.predict(X_shared), dtype)
        assert_close(each[b], ref.predict(X_each[b]), dtype)
        assert_close(scores[b], ref.transform(X_each[b]), dtype)
        if dtype == "float64":
            assert_close(fit.weights[b].numpy(), ref.x_weights_, dtype)
            assert_close(fit.x_loadings[b].numpy(), ref.x_loadings_, dtype)
            assert_close(fit.y_loadings[b].numpy(), ref.y_loadings_[0], dtype)
            assert_close(fit.coef[b].numpy(), ref.coef_[0], dtype)
            assert_close(fit.x_mean[b].numpy(), X[b].mean(0), dtype)


def test_ncomp_beyond_rank_stops_adding_components(library):
    spectra, y = library
    X, yy = spectra[None, :10], y[None, :10]  # 10 samples: centred rank 9
    extra = pls1_fit(X, yy, 15)
    exact = sklearn_fit(X[0], yy[0], 9)
    assert_close(pls1_predict(extra, spectra[10:40])[0], exact.predict(spectra[10:40]), "float64")
    np.testing.assert_array_equal(extra.y_loadings[0, 9:].numpy(), 0)
    np.testing.assert_array_equal(extra.weights[0, :, 9:].numpy(), 0)
    # more samples than bands, with two bands repeated: rank 4 of 6 bands
    narrow = spectra[:50, ::40][:, [0, 1, 2, 3, 0, 1]]
    fit = pls1_fit(narrow[None], y[None, :50], 6)
    assert_close(pls1_predict(fit, narrow)[0], sklearn_fit(narrow, y[:50], 4).predict(narrow), "float64")
    # a constant response has nothing to explain: every prediction is its mean
    flat = pls1_fit(spectra[None, :20], np.full((1, 20), 2.5), 3)
    np.testing.assert_allclose(pls1_predict(flat, spectra[20:30]), 2.5)


def test_a_subset_fit_does_not_depend_on_its_batch(library):
    X, y, X_new = subsets(*library, 9, 50, 209, seed=5)
    batched = pls1_fit_predict(X, y, X_new[0], 8)
    alone = np.concatenate([pls1_fit_predict(X[b : b + 1], y[b : b + 1], X_new[0], 8) for b in range(9)])
    np.testing.assert_allclose(batched, alone, rtol=1e-12)


def test_types_and_devices_follow_the_input(library):
    X, y, X_new = subsets(*library, 2, 40, 43, seed=1)
    out = pls1_fit_predict(X, y, X_new[0], 4)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (2, 7)
    fit32 = pls1_fit(torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32), 4)
    assert fit32.coef.dtype == torch.float32
    pred = pls1_predict(fit32, torch.as_tensor(X_new[0]))
    assert isinstance(pred, torch.Tensor) and pred.shape == (2, 7)
    assert pls1_transform(fit32, X_new[0]).shape == (2, 7, 4)
    assert pls1_fit(X.astype(np.float32), y, 2, dtype="float64").coef.dtype == torch.float64


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros((2, 5, 3)), np.zeros((2, 4)), 2), "expected X of shape"),
        ((np.zeros((0, 5, 3)), np.zeros((0, 5)), 2), "expected X of shape"),
        ((np.zeros((2, 1, 3)), np.zeros((2, 1)), 2), "at least 2 samples"),
        ((np.zeros((2, 5, 3)), np.zeros((2, 5)), 0), "ncomp=0"),
        ((np.full((2, 5, 3), np.nan), np.zeros((2, 5)), 2), "NaN"),
    ],
)
def test_bad_input_is_reported(args, match):
    with pytest.raises(UserInputError, match=match):
        pls1_fit(*args)


def test_bad_new_samples_are_reported(library):
    X, y, X_new = subsets(*library, 2, 40, 43, seed=2)
    with pytest.raises(UserInputError, match="X_new: expected shape"):
        pls1_predict(pls1_fit(X, y, 2), X_new[:, :, :40])


def test_cv_ncomp_matches_brute_force_sklearn(library):
    spectra, y = library
    X, yy = spectra[:57, ::5], y[:57]  # 57 samples: folds of 5 and 6
    best, rmse = pls1_cv_ncomp(X, yy, max_ncomp=8, folds=10, seed=3)
    sse = np.zeros(8)
    for train, test in KFold(10, shuffle=True, random_state=3).split(X):
        for a in range(1, 9):
            sse[a - 1] += ((sklearn_fit(X[train], yy[train], a).predict(X[test]) - yy[test]) ** 2).sum()
    expected = np.sqrt(sse / len(yy))
    np.testing.assert_allclose(rmse, expected, rtol=1e-9)
    assert best == np.argmin(expected) + 1


def test_regressor_matches_sklearn_and_cv_mode(library):
    spectra, y = library
    X, yy = spectra[:120], y[:120]
    model = PLSRegressor(n_components=10).fit(X, yy)
    assert_close(model.predict(spectra[120:]), sklearn_fit(X, yy, 10).predict(spectra[120:]), "float64")
    cv = PLSRegressor(n_components="cv", max_components=12, random_state=1).fit(X, yy)
    sse = np.zeros(12)  # the same 10 folds by brute force with scikit-learn
    for train, test in KFold(10, shuffle=True, random_state=1).split(X):
        for a in range(1, 13):
            sse[a - 1] += ((sklearn_fit(X[train], yy[train], a).predict(X[test]) - yy[test]) ** 2).sum()
    expected = np.sqrt(sse / len(yy))
    np.testing.assert_allclose(cv.cv_rmse_, expected, rtol=1e-8)
    assert cv.n_components_ == np.argmin(expected) + 1
    assert_close(cv.predict(spectra[120:]), sklearn_fit(X, yy, cv.n_components_).predict(spectra[120:]), "float64")
    assert PLSRegressor(n_components=50).fit(X[:20, :8], yy[:20]).n_components_ == 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cuda_matches_sklearn(library, dtype):
    X, y, X_new = subsets(*library, 6, 100, 209, seed=4)
    pred = pls1_fit_predict(X, y, torch.as_tensor(X_new[0], device="cuda"), 10, dtype=dtype, device="cuda")
    assert pred.device.type == "cuda"
    for b in range(6):
        assert_close(pred[b].cpu().numpy(), sklearn_fit(X[b], y[b], 10).predict(X_new[0]), dtype)


@parametrize_with_checks([PLSRegressor(), PLSRegressor(n_components="cv", max_components=4, dtype="float32")])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
