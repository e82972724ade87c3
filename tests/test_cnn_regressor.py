"""dtl_dist.CNNRegressor (issue 18, item 3): a scikit-learn estimator over the study's CNN search and fold trainer,
in pipelines and cross_val_score, clone-able, picklable, passing check_estimator (exemptions justified below)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

import dtl_dist
from dtl_dist.nn.builder import CNNConfig, ConvBlock, FCBlock
from dtl_dist.nn.space import SearchSpace
from dtl_dist.nn.trainer import TrainConfig
from dtl_dist.spectra.preprocess import SNV

CNNRegressor = dtl_dist.CNNRegressor
TINY = SearchSpace.from_config(CNNConfig([ConvBlock(4, 3)], [FCBlock(8)]), TrainConfig(max_epochs=20, patience=5))
"""A tiny architecture inside the search space; ``max_epochs`` below caps it at a few epochs (test cost)."""
FC_ONLY = SearchSpace.from_config(CNNConfig([], [FCBlock(8)]), TrainConfig(max_epochs=20, patience=5))
"""No conv block, so it also runs on the one-feature data of check_fit2d_1feature."""

@parametrize_with_checks([CNNRegressor(FC_ONLY, folds=2, max_epochs=2)])
def test_sklearn_estimator_checks(estimator, check):
    """Every check passes, none exempted: the one tag set is ``poor_score`` (a 2-epoch CNN on sklearn's small
    check data makes no accuracy promise; accuracy is measured on spectra in benchmarks/README.md)."""
    check(estimator)


def _spectra(n=48, bands=24, seed=0):
    """Smooth synthetic spectra whose SOC is a band ratio (a signal an SNV + CNN can learn)."""
    rng = np.random.default_rng(seed)
    wl = np.linspace(0, 1, bands)
    soc = rng.uniform(0.5, 4, n)
    X = 1 + rng.normal(0, 0.05, (n, 1)) + 0.1 * soc[:, None] * np.exp(-((wl - 0.5) / 0.1) ** 2)
    return X + rng.normal(0, 0.002, X.shape), soc


def test_pipeline_cross_val_score_equals_a_hand_loop():
    X, y = _spectra()
    pipe = Pipeline([("snv", SNV()), ("cnn", CNNRegressor(TINY, folds=3, max_epochs=4))])
    scores = cross_val_score(pipe, X, y, cv=KFold(2), scoring="r2")
    by_hand = []
    for train, test in KFold(2).split(X):
        fitted = clone(pipe).fit(X[train], y[train])
        by_hand.append(r2_score(y[test], fitted.predict(X[test])))
    np.testing.assert_allclose(scores, by_hand, rtol=1e-6)


def test_params_clone_pickle_determinism_and_the_search():
    X, y = _spectra(n=40)
    model = CNNRegressor(trials=1, folds=3, max_epochs=3, random_state=5)
    assert model.get_params() == {"architecture": None, "trials": 1, "folds": 3, "max_epochs": 3,
                                  "random_state": 5, "mode": "auto"}
    model.set_params(trials=2)
    assert clone(model).get_params()["trials"] == 2
    model.fit(X, y)
    table = model.search_
    assert len(table) == 2 and set(table.status) == {"complete"}
    assert model.cv_rmse_ == pytest.approx(table.rmse.min())  # the candidate with the lowest k-fold RMSE
    assert len(model.fold_states_) == 3  # its 3 fold models predict together
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))
    again = clone(model).fit(X, y)
    np.testing.assert_array_equal(again.predict(X), model.predict(X))  # same seed, same model
    with pytest.raises(ValueError, match="not a trial of the search space"):
        CNNRegressor({**TINY, "max_epochs": 3}).fit(X, y)
