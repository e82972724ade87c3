"""Kennard-Stone (paper section 2.1) against the kennard-stone PyPI package, brute force and a 30k x 50 run."""

import tracemalloc

import kennard_stone as ks_package
import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.decomposition import PCA
from sklearn.feature_selection import VarianceThreshold
from sklearn.preprocessing import StandardScaler

from conftest import limesoda_site
from dtl_dist.errors import UserInputError
from dtl_dist.select import kennard_stone, split_local
from dtl_dist.spectra import paper_preprocessing
from dtl_dist.spectra.grid import make_grid, resample

SITES = ["UL.120", "CV.98", "SC.93"]


def _spectra(*sites):
    """SNV absorbance of LimeSoDa sites (reflectance %), pooled on 420-2500 nm every 10 nm when several."""
    grid = make_grid(420, 2500, 10)
    parts = [limesoda_site(s) for s in sites]
    X = parts[0]["X"] if len(parts) == 1 else np.vstack([resample(p["X"], p["wavelengths"], grid) for p in parts])
    return paper_preprocessing("reflectance_percent").fit_transform(X)


def _package_order(X, n, metric="euclidean"):
    """Indices the kennard-stone package selects, in its selection order (it returns them last-selected first)."""
    _, _, train, _ = ks_package.train_test_split(X, np.arange(len(X)), train_size=n, metric=metric)
    return np.asarray(train)[::-1]


def _brute_force(X, n):
    """Textbook Kennard-Stone with the full distance matrix."""
    D = cdist(X, X)
    i, j = np.unravel_index(np.argmax(D), D.shape)
    selected = [min(i, j), max(i, j)]
    while len(selected) < n:
        nearest = D[:, selected].min(axis=1)
        nearest[selected] = -1
        selected.append(int(np.argmax(nearest)))
    return np.array(selected)


@pytest.mark.parametrize("site", SITES)
def test_same_selection_as_kennard_stone_package(site):
    # The package standardises bands first, so both get standardised spectra. It starts from the sample farthest
    # from the mean; on these data that sample is one of the farthest pair, so it picks the other one second and
    # from then on both algorithms must agree step by step. Only the order of the first two can differ.
    X = StandardScaler().fit_transform(VarianceThreshold().fit_transform(_spectra(site)))
    ours = kennard_stone(X, 30)
    theirs = _package_order(X, 30)
    assert set(ours) == set(theirs)
    assert set(ours[:2]) == set(theirs[:2])
    assert np.array_equal(ours[2:], theirs[2:])


def test_mahalanobis_same_as_kennard_stone_package():
    # full-rank PC scores: whitened PCA on all components is exactly the Mahalanobis distance the package uses
    scores = PCA(8).fit_transform(_spectra("UL.120"))
    ours = kennard_stone(scores, 30, metric="mahalanobis", n_components=8)
    theirs = _package_order(scores, 30, metric="mahalanobis")
    assert set(ours[:2]) == set(theirs[:2])
    assert np.array_equal(ours[2:], theirs[2:])


def test_mahalanobis_default_keeps_99_percent_variance():
    X = _spectra("UL.120")
    k = int(np.searchsorted(np.cumsum(PCA().fit(X).explained_variance_ratio_), 0.99) + 1)
    scores = PCA(k).fit_transform(X)
    assert np.array_equal(kennard_stone(X, 30, metric="mahalanobis"), _brute_force(scores / scores.std(axis=0), 30))


def test_pooled_sites_match_brute_force_and_split_local():
    X = _spectra("CV.98", "SC.93", "SL.125", "UL.120")
    assert np.array_equal(kennard_stone(X, 30), _brute_force(X, 30))
    labelled, test = split_local(X, 30)
    assert np.array_equal(labelled, kennard_stone(X, 30))
    assert np.array_equal(np.sort(np.concatenate([labelled, test])), np.arange(len(X)))
    assert np.all(np.diff(test) > 0) and len(test) == len(X) - 30


def test_ties_go_to_lowest_index():
    # a square: all four sides tie and both diagonals tie; the pair is (0, 2), then 1 beats 3
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    assert kennard_stone(square, 4).tolist() == [0, 2, 1, 3]
    # duplicated rows are selected too once the distinct ones are exhausted
    assert kennard_stone(np.array([[0.0], [0.0], [1.0]]), 3).tolist() == [0, 2, 1]


def test_large_random_bounded_memory():
    X = np.random.default_rng(0).normal(size=(30_000, 50))
    tracemalloc.start()
    selected = kennard_stone(X, 30)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 128 * 2**20  # data 11 MiB + one 32 MiB block of distances; a 30k x 30k matrix would be 7.2 GB
    assert len(set(selected.tolist())) == 30 and selected.min() >= 0 and selected.max() < len(X)
    # each step takes the sample farthest from its nearest already selected sample
    for step in range(2, 30):
        nearest = cdist(X, X[selected[:step]]).min(axis=1)
        assert nearest[selected[step]] == pytest.approx(nearest.max(), rel=1e-9)
    # the first pair is the farthest pair: check against brute force on a subset with several row blocks
    subset = X[:3000]
    assert np.array_equal(kennard_stone(subset, 5), _brute_force(subset, 5))
    far = cdist(X[selected[:1]], X).max()
    assert np.linalg.norm(X[selected[0]] - X[selected[1]]) == pytest.approx(far, rel=1e-12)


@pytest.mark.parametrize(
    "X, n, kwargs, message",
    [
        (np.ones((5, 3)), 6, {}, "n=6"),
        (np.ones((5, 3)), 1, {}, "n=1"),
        (np.ones((5, 3)), 2.0, {}, "n=2.0"),
        (np.array([[0.0, 1.0], [1.0, np.nan], [2.0, 2.0]]), 2, {}, "row 1, column 1"),
        (np.ones(5), 2, {}, "2-D"),
        (np.eye(4), 2, {"metric": "cosine"}, "metric"),
        (np.eye(4), 2, {"metric": "mahalanobis", "n_components": 9}, "n_components=9"),
    ],
)
def test_bad_input(X, n, kwargs, message):
    with pytest.raises(UserInputError, match=message):
        kennard_stone(X, n, **kwargs)
