"""Fold training: vectorised == sequential, seeded, early stopping restores the best weights, freezing."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import KFold

from dtl_dist.errors import UserInputError
from dtl_dist.nn.builder import CNNConfig, ConvBlock, FCBlock, build_cnn
from dtl_dist.nn.folds import kfold_assignment
from dtl_dist.nn.trainer import OPTIMIZERS, FoldEnsemble, TrainConfig, cross_validate, fit_model, fold_seed

SMALL = CNNConfig(
    [ConvBlock(4, 5, stride=2, padding="same", activation="swish", batch_norm=True, pooling="max", dropout=0.2)],
    [FCBlock(8, "selu", batch_norm=True, dropout=0.3)],
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def data(n=53, bands=24, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, bands)).astype(np.float32)
    y = (X[:, 3] - 0.5 * X[:, 10] + 0.1 * rng.normal(size=n)).astype(np.float32)
    return X, y


def test_kfold_assignment_sizes_match_sklearn_and_are_seeded():
    for n, k in [(130, 10), (53, 10), (10, 10), (27, 4)]:
        ids = kfold_assignment(n, k, seed=5)
        sizes = sorted(len(test) for _, test in KFold(k).split(np.zeros(n)))
        assert sorted(np.bincount(ids, minlength=k)) == sizes
        assert np.array_equal(ids, kfold_assignment(n, k, seed=5))
    assert not np.array_equal(kfold_assignment(130, 10, seed=1), kfold_assignment(130, 10, seed=2))
    with pytest.raises(UserInputError, match="9 samples cannot be split into 10 folds"):
        kfold_assignment(9, 10)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_vectorised_equals_sequential(optimizer):
    # 53 samples, 10 folds: training sets of 47 and 48; batch 23 -> [23, 24] and [23, 23, 2] batches, so
    # folds run in groups of different batch sizes and some folds skip the last step.
    X, y = data()
    train = TrainConfig(lr=3e-3, batch_size=23, optimizer=optimizer, weight_decay=1e-3, max_epochs=4, patience=2, seed=7)
    seq = cross_validate(X, y, SMALL, train, mode="sequential")
    vec = cross_validate(X, y, SMALL, train, mode="vectorised")
    np.testing.assert_allclose(vec.fold_rmse, seq.fold_rmse, rtol=1e-4)
    np.testing.assert_array_equal(vec.epochs, seq.epochs)
    for a, b in zip(vec.val_loss + vec.train_loss, seq.val_loss + seq.train_loss):
        np.testing.assert_allclose(a, b, rtol=1e-4)
    for sa, sb in zip(vec.states, seq.states):
        assert sa.keys() == sb.keys()
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-3, atol=1e-4)


def test_same_seed_same_result_and_seed_matters():
    X, y = data()
    train = TrainConfig(lr=3e-3, batch_size=16, max_epochs=3, patience=3, seed=1)
    a = cross_validate(X, y, SMALL, train)
    b = cross_validate(X, y, SMALL, train)
    np.testing.assert_array_equal(a.fold_rmse, b.fold_rmse)
    c = cross_validate(X, y, SMALL, TrainConfig(lr=3e-3, batch_size=16, max_epochs=3, patience=3, seed=2))
    assert not np.array_equal(a.fold_rmse, c.fold_rmse)
    assert a.mean_rmse == pytest.approx(a.fold_rmse.mean()) and a.std_rmse == pytest.approx(a.fold_rmse.std())


def test_fold_model_is_the_one_fit_model_trains():
    X, y = data()
    train = TrainConfig(lr=3e-3, batch_size=16, max_epochs=3, patience=3, seed=4)
    cv = cross_validate(X, y, SMALL, train, folds=5)
    f = 2
    tr, va = cv.folds != f, cv.folds == f
    fit = fit_model(X[tr], y[tr], SMALL, train, validation=(X[va], y[va]), seed=fold_seed(4, f))
    assert fit.val_rmse == pytest.approx(cv.fold_rmse[f], rel=1e-4)


def test_early_stopping_restores_best_weights():
    # targets unrelated to the spectra, a large model and learning rate: validation loss rises early
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 30)).astype(np.float32)
    y = rng.normal(size=40).astype(np.float32)
    config = CNNConfig([ConvBlock(16, 3)], [FCBlock(64)])
    train = TrainConfig(lr=1e-2, batch_size=8, max_epochs=60, patience=2, seed=0)
    cv = cross_validate(X, y, config, train, folds=4)
    assert np.all(cv.epochs < train.max_epochs)
    np.testing.assert_array_equal(cv.epochs, cv.best_epochs + 1 + train.patience)
    ensemble = cv.ensemble()
    each = ensemble.predict_each(X)
    for f in range(4):
        val = cv.folds == f
        assert cv.fold_rmse[f] == pytest.approx(math.sqrt(min(cv.val_loss[f])), rel=1e-6)
        assert cv.fold_rmse[f] == pytest.approx(math.sqrt(mean_squared_error(y[val], each[f, val])), rel=1e-4)
    np.testing.assert_allclose(ensemble.predict(X), each.mean(axis=0), rtol=1e-6)


def test_on_epoch_reports_every_fold_and_epoch():
    X, y = data()
    seen = []
    cv = cross_validate(X, y, SMALL, TrainConfig(max_epochs=2, patience=5), folds=3, on_epoch=lambda *a: seen.append(a))
    assert sorted((f, e) for f, e, _, _ in seen) == [(f, e) for f in range(3) for e in range(2)]
    for f, e, tl, vl in seen:
        assert cv.train_loss[f][e] == tl and cv.val_loss[f][e] == vl


@pytest.mark.parametrize("mode", ["sequential", "vectorised"])
def test_frozen_blocks_do_not_change(mode):
    X, y = data()
    torch.manual_seed(0)
    base = build_cnn(SMALL, X.shape[1]).state_dict()
    train = TrainConfig(lr=1e-2, batch_size=16, max_epochs=3, patience=5)
    cv = cross_validate(X, y, SMALL, train, folds=3, mode=mode, init_state=base, frozen_blocks=2)
    for fold, state in enumerate(cv.states):
        for key, value in state.items():
            # the fixed blocks and the input scaling they expect stay; the output scaling is refitted
            frozen = key.startswith(("blocks.0.", "blocks.1.")) or key in ("x_mean", "x_scale")
            assert torch.equal(value, base[key]) == frozen or "num_batches" in key, key
        assert state["y_mean"].item() == pytest.approx(y[cv.folds != fold].mean(), rel=1e-5)
    fit = fit_model(X, y, SMALL, train, init_state=base, frozen_blocks=1)
    assert fit.epochs == train.max_epochs and math.isnan(fit.val_rmse)
    assert all(torch.equal(fit.state_dict[k], base[k]) for k in base if k.startswith("blocks.0."))


def test_bad_input_is_rejected_before_training():
    X, y = data(n=12)
    train = TrainConfig(max_epochs=1)
    with pytest.raises(UserInputError, match="cannot be split into 20 folds"):
        cross_validate(X, y, SMALL, train, folds=20)
    y_nan = y.copy()
    y_nan[4] = np.nan
    with pytest.raises(UserInputError, match="first at row 4"):
        cross_validate(X, y_nan, SMALL, train, folds=3)
    with pytest.raises(UserInputError, match="12 values"):
        cross_validate(X, y[:5], SMALL, train, folds=3)
    with pytest.raises(UserInputError, match="nothing"):
        cross_validate(X, y, CNNConfig([ConvBlock(2, 30)]), train, folds=3)
    with pytest.raises(UserInputError, match="optimizer"):
        cross_validate(X, y, SMALL, TrainConfig(optimizer="lbfgs"), folds=3)
    with pytest.raises(UserInputError, match="mode"):
        cross_validate(X, y, SMALL, train, folds=3, mode="parallel")
    with pytest.raises(UserInputError, match="frozen_blocks"):
        fit_model(X, y, SMALL, train, frozen_blocks=4)
    with pytest.raises(UserInputError, match="do not match"):
        fit_model(X, y, SMALL, train, init_state=build_cnn(CNNConfig([], [FCBlock(3)]), 24).state_dict())
    with pytest.raises(UserInputError, match="fold ids"):
        cross_validate(X, y, SMALL, train, folds=np.arange(5))


def test_fold_ensemble_from_states():
    X, y = data()
    cv = cross_validate(X, y, SMALL, TrainConfig(max_epochs=2), folds=3)
    ensemble = FoldEnsemble.from_states(SMALL, X.shape[1], cv.states)
    np.testing.assert_allclose(ensemble.predict(X[:5]), cv.ensemble().predict(X[:5]))
    assert ensemble.predict_each(X).shape == (3, len(X))
