"""The compiled PLS1 subset scorer (dtl_dist.linear.pls_compiled): scores against scikit-learn's PLSRegression on
real spectra for the three RS-LOCAL criteria (paper section 2.3.2), the rank rule against the torch kernel,
bitwise invariance to the split of the subsets into calls and threads, NaN spectra, bad inputs, the cache."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.cross_decomposition import PLSRegression

from conftest import limesoda_site
from dtl_dist.errors import UserInputError
from dtl_dist.linear.pls_compiled import CRITERIA, subset_scores, warm_up
from dtl_dist.linear.pls_kernel import pls1_fit, pls1_predict, pls1_transform
from dtl_dist.spectra.grid import make_grid, resample
from dtl_dist.spectra.preprocess import SNV


@pytest.fixture(scope="module")
def real_library():
    """SC.93 + SL.125 + UL.120 pooled (338 SNV absorbance spectra, 420-2500 nm every 10 nm) as the library, 30
    random CV.98 samples as the local ones (as tests/test_rslocal.py builds it)."""
    sites = [limesoda_site(s) for s in ("SC.93", "SL.125", "UL.120", "CV.98")]
    grid = make_grid(420, 2500, 10)
    spectra = [SNV().fit_transform(resample(np.log10(100 / s["X"]), s["wavelengths"], grid)) for s in sites]
    scale = [1.0, 1 / 1.724, 1 / 1.724, 1.0]  # SOM -> SOC for the Swedish sites
    X = np.ascontiguousarray(np.vstack(spectra[:3]))
    y = np.concatenate([s["y"] * f for s, f in zip(sites[:3], scale)])
    local = np.random.default_rng(0).choice(len(spectra[3]), 30, replace=False)
    return X, y, np.ascontiguousarray(spectra[3][local]), sites[3]["y"][local]


def sklearn_scores(X, y, local_X, local_y, rows, ncomp) -> dict:
    """Reference scores per criterion: PLSRegression(scale=False) on each subset (tests/test_rslocal.py)."""
    want = {c: [] for c in CRITERIA}
    for r in rows:
        pls = PLSRegression(n_components=ncomp, scale=False).fit(X[r], y[r])
        want["rmse"].append(np.sqrt(np.mean((pls.predict(local_X).ravel() - local_y) ** 2)))
        T = pls.transform(local_X)
        want["reconstruction"].append(np.sqrt(np.mean((local_X - X[r].mean(0) - T @ pls.x_loadings_.T) ** 2)))
        T_sub, T_loc = pls.x_scores_, pls.transform(local_X)
        d = T_loc.mean(0) - T_sub.mean(0)
        want["mahalanobis"].append(np.sqrt(d @ np.linalg.solve(np.cov(T_sub.T), d)))
    return {c: np.array(v) for c, v in want.items()}


def torch_scores(X, rows, y, local_X, local_y, ncomp, criterion) -> np.ndarray:
    """The torch kernel's scores in float64, as RS-LOCAL computed them before the compiled kernel (rslocal's
    ``_score_chunk`` at commit fe107c8): an independent implementation of the same rank rule."""
    m = rows.shape[1]
    Xs = torch.as_tensor(X[rows])
    fit = pls1_fit(Xs, torch.as_tensor(y[rows]), ncomp)
    local = torch.as_tensor(local_X)
    if criterion == "rmse":
        score = (pls1_predict(fit, local) - torch.as_tensor(local_y)).square().mean(dim=1).sqrt()
    elif criterion == "reconstruction":
        T = pls1_transform(fit, local)
        score = ((local[None] - fit.x_mean[:, None, :]) - T @ fit.x_loadings.mT).square().mean(dim=(1, 2)).sqrt()
    else:
        T_local, T_subset = pls1_transform(fit, local), pls1_transform(fit, Xs)
        diff = T_local.mean(dim=1) - T_subset.mean(dim=1)
        centred = T_subset - T_subset.mean(dim=1, keepdim=True)
        solved, info = torch.linalg.solve_ex(centred.mT @ centred / (m - 1), diff)
        score = torch.where(info == 0, (diff * solved).sum(dim=1).clamp_min(0).sqrt(), torch.inf)
    score = score.numpy()
    return np.where(np.isfinite(score), score, np.inf)


@pytest.mark.parametrize(("m", "ncomp"), [(100, 10), (60, 15), (40, 20)])
def test_scores_match_scikit_learn(real_library, m, ncomp):
    """float64: 1e-8 of scikit-learn. float32: 1e-4 of scikit-learn fitted on the same float32 data (the
    rounding of the data to float32 alone moves scikit-learn's own scores by up to ~2e-4 at 20 components)."""
    X, y, local_X, local_y = real_library
    rng = np.random.default_rng(m)
    rows = np.stack([rng.choice(len(X), m, replace=False) for _ in range(12)]).astype(np.int32)
    f32 = [a.astype(np.float32) for a in (X, y, local_X, local_y)]
    want64 = sklearn_scores(X, y, local_X, local_y, rows, ncomp)
    want32 = sklearn_scores(*(a.astype(np.float64) for a in f32), rows, ncomp)
    for criterion in CRITERIA:
        got64 = subset_scores(X, rows, y, local_X, local_y, ncomp, criterion)
        np.testing.assert_allclose(got64, want64[criterion], rtol=1e-8, err_msg=criterion)
        got32 = subset_scores(f32[0], rows, f32[1], f32[2], f32[3], ncomp, criterion)
        np.testing.assert_allclose(got32, want32[criterion], rtol=1e-4, err_msg=criterion)
        assert got32.dtype == np.float64


def test_rank_deficient_subsets_follow_the_torch_kernel(real_library):
    """Duplicated spectra (rank below ncomp), subsets smaller than ncomp, a constant response: the components
    beyond the rank are dropped as the torch kernel drops them (Mahalanobis: +inf)."""
    X, y, local_X, local_y = real_library
    y = y.copy()
    y[300:] = 1.5  # a constant response for rows 300..337
    rng = np.random.default_rng(1)
    rows = [np.resize(rng.choice(300, 2 + k % 7, replace=False), 40) for k in range(14)]  # rank 1 .. 7
    rows += [np.arange(300, 338).repeat(2)[:40], rng.choice(300, 40, replace=False)]  # constant y; full rank
    rows += [np.concatenate([rng.choice(300, 3 + k, replace=False), rng.choice(300, 37 - k)]) for k in range(4)]
    rows = np.array(rows)
    small = rng.choice(300, (6, 8))  # m = 8 < ncomp
    for ncomp in (3, 10, 45):
        for criterion in CRITERIA:
            for r in (rows, small):
                want = torch_scores(X, r, y, local_X, local_y, ncomp, criterion)
                got = subset_scores(X, r, y, local_X, local_y, ncomp, criterion)
                np.testing.assert_allclose(got, want, rtol=1e-8, err_msg=f"{criterion}, ncomp={ncomp}")
    maha = subset_scores(X, rows, y, local_X, local_y, 10, "mahalanobis")
    assert np.isinf(maha[:14]).all() and np.isinf(maha[14]) and np.isfinite(maha[15])
    # one spectrum 40 times with 40 different targets: the centring is exact (corrected two-pass), so no
    # component is left and the model is the mean
    X2 = np.vstack([X, np.repeat(X[7:8], 40, axis=0)])
    y2 = np.concatenate([y, rng.normal(2.0, 1.0, 40)])
    same = np.arange(len(X), len(X2))[None]
    got = {c: subset_scores(X2, same, y2, local_X, local_y, 10, c)[0] for c in CRITERIA}
    np.testing.assert_allclose(got["rmse"], np.sqrt(np.mean((y2[same].mean() - local_y) ** 2)), rtol=1e-12)
    np.testing.assert_allclose(got["reconstruction"], np.sqrt(np.mean((local_X - X[7]) ** 2)), rtol=1e-12)
    assert np.isposinf(got["mahalanobis"])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bitwise_identical_for_any_split_and_threads(real_library, dtype):
    X, y, local_X, local_y = (a.astype(dtype) for a in real_library)
    rng = np.random.default_rng(2)
    rows = np.stack([rng.choice(len(X), 50, replace=False) for _ in range(64)])
    for criterion in CRITERIA:
        whole = subset_scores(X, rows, y, local_X, local_y, 8, criterion)
        cuts = [0, 1, 8, 9, 40, 64]
        parts = np.concatenate([subset_scores(X, rows[a:b], y, local_X, local_y, 8, criterion)
                                for a, b in zip(cuts, cuts[1:])])
        assert np.array_equal(parts, whole), criterion
        assert np.array_equal(subset_scores(X, rows[::-1].astype(np.int32), y, local_X, local_y, 8, criterion),
                              whole[::-1]), criterion
        halves = [None, None]

        def score(h):
            halves[h] = np.concatenate([subset_scores(X, rows[i:i + 4], y, local_X, local_y, 8, criterion)
                                        for i in range(32 * h, 32 * h + 32, 4)])

        threads = [threading.Thread(target=score, args=(h,)) for h in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert np.array_equal(np.concatenate(halves), whole), criterion


def test_a_nan_spectrum_or_target_scores_inf(real_library):
    X, y, local_X, local_y = real_library
    rng = np.random.default_rng(3)
    rows = np.stack([rng.choice(len(X), 40, replace=False) for _ in range(20)])
    bad_X, bad_y = X.copy(), y.copy()
    bad_X[rows[3, 5], 100] = np.nan
    bad_y[rows[7, 0]] = np.nan
    hit = np.isin(rows, [rows[3, 5], rows[7, 0]]).any(1)
    for criterion in CRITERIA:
        clean = subset_scores(X, rows, y, local_X, local_y, 5, criterion)
        got = subset_scores(bad_X, rows, bad_y, local_X, local_y, 5, criterion)
        assert np.isposinf(got[hit]).all() and np.array_equal(got[~hit], clean[~hit]), criterion


def test_bad_inputs_raise_user_input_errors(real_library):
    X, y, local_X, local_y = real_library
    rows = np.arange(40).reshape(2, 20)
    ok = dict(X=X, subsets=rows, y=y, local_X=local_X, local_y=local_y, ncomp=3)
    bad = [
        dict(X=X[0]), dict(X=X[:, :, None]), dict(X=np.array([["a"]])), dict(subsets=rows[0]),
        dict(subsets=rows[:, :1]), dict(subsets=rows + 0.5), dict(subsets=rows + len(X)), dict(subsets=rows - 1),
        dict(y=y[:-1]), dict(local_X=local_X[:, :-1]), dict(local_X=local_X[:0]), dict(local_y=None),
        dict(local_y=local_y[:-1]), dict(local_X=np.full_like(local_X, np.nan)), dict(ncomp=0), dict(ncomp=2.0),
        dict(criterion="r2"),
    ]
    for change in bad:
        with pytest.raises(UserInputError) as err:
            subset_scores(**{**ok, **change})
        assert "\n" not in str(err.value)
    assert subset_scores(**{**ok, "subsets": rows[:0]}).shape == (0,)
    assert np.isfinite(subset_scores(**{**ok, "local_y": None, "criterion": "mahalanobis"})).all()
    # other layouts and dtypes are converted: an F-ordered library, integer indices of any width, float32 targets
    want = subset_scores(**ok)
    assert np.array_equal(subset_scores(**{**ok, "X": np.asfortranarray(X), "subsets": rows.astype(np.int16),
                                           "y": y.astype(np.float32).astype(np.float64)}),
                          subset_scores(**{**ok, "y": y.astype(np.float32).astype(np.float64)}))
    assert want.shape == (2,)


def test_a_second_process_loads_the_compiled_kernel_from_the_cache():
    warm_up()  # compiles here or loads the cache written by an earlier run
    code = ("from dtl_dist.linear import pls_compiled as pc; pc.warm_up(); "
            "s = pc._scores.stats; print(len(s.cache_hits), len(s.cache_misses))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "0"]  # float32 and float64 loaded, nothing compiled
