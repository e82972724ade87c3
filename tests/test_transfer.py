"""Transferring representations (paper 2.3.3-2.3.4): base model choice, fixed front blocks, best freeze_depth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dtl_dist.engines.ray import map_blocks
from dtl_dist.errors import UserInputError
from dtl_dist.nn.builder import CNNConfig, ConvBlock, FCBlock
from dtl_dist.nn.trainer import TrainConfig, cross_validate
from dtl_dist.nn.transfer import freeze_depths, select_base_model, transfer_representations

CONFIG = CNNConfig([ConvBlock(3, 5, stride=2, batch_norm=True)], [FCBlock(8, "elu"), FCBlock(4)])
TRAIN = TrainConfig(max_epochs=5, patience=3, batch_size=8, lr=3e-3)


@pytest.fixture(scope="module")
def setting():
    rng = np.random.default_rng(0)
    library_X = rng.normal(size=(60, 24)).astype(np.float32)
    library_y = library_X[:, :3].sum(axis=1)
    library = cross_validate(library_X, library_y, CONFIG, TRAIN, folds=3)
    local_X = (rng.normal(size=(24, 24)) * 0.8 + 0.1).astype(np.float32)
    local_y = local_X[:, :3].sum(axis=1) + 0.3
    return library, local_X, local_y


def test_base_model_is_the_fold_model_with_the_smallest_local_rmse(setting):
    library, local_X, local_y = setting
    index, rmse = select_base_model(library.ensemble(), local_X, local_y)
    by_hand = [np.sqrt(np.mean((m(torch.as_tensor(local_X)).detach().numpy() - local_y) ** 2))
               for m in library.ensemble().models]
    np.testing.assert_allclose(rmse, by_hand, rtol=1e-5)
    assert index == int(np.argmin(by_hand))


def test_front_blocks_stay_fixed_and_the_best_depth_has_the_lowest_cv_rmse(setting):
    library, local_X, local_y = setting
    base = library.states[select_base_model(library.ensemble(), local_X, local_y)[0]]
    assert freeze_depths(CONFIG) == [1, 3, 4]  # blocks: conv, flatten, fc, fc, output; flatten adds nothing
    result = transfer_representations(base, CONFIG, local_X, local_y, folds=4, train_config=TRAIN)
    assert set(result.cv_rmse) == {1, 3, 4}
    assert result.freeze_depth == min(result.cv_rmse, key=result.cv_rmse.get)
    for depth, cv in result.cv.items():
        fixed = [name for name in base if int(name.split(".")[1]) < depth]
        trained = [name for name in base if int(name.split(".")[1]) >= depth and name.endswith("weight")]
        for state in cv.states:
            for name in fixed:  # weights and batch-norm statistics of the fixed blocks are the base model's
                torch.testing.assert_close(state[name], base[name], rtol=0, atol=0)
            assert any(not torch.equal(state[name], base[name]) for name in trained)
        # each candidate is a plain 4-fold CV from the base weights with `depth` blocks fixed
        reference = cross_validate(local_X, local_y, CONFIG, TRAIN, cv.folds, init_state=base, frozen_blocks=depth)
        assert result.cv_rmse[depth] == pytest.approx(reference.mean_rmse, rel=1e-6)
    np.testing.assert_allclose(result.ensemble().predict(local_X), result.best.ensemble().predict(local_X))


def test_transfers_on_ray_give_the_same_result(ray_session, setting):
    library, local_X, local_y = setting
    base = library.states[0]
    serial = transfer_representations(base, CONFIG, local_X, local_y, folds=4, train_config=TRAIN, depths=[1, 4])
    on_ray = transfer_representations(base, CONFIG, local_X, local_y, folds=4, train_config=TRAIN, depths=[1, 4],
                                      map_blocks=map_blocks(num_cpus=1))
    assert on_ray.cv_rmse == serial.cv_rmse and on_ray.freeze_depth == serial.freeze_depth


def test_bad_input(setting):
    library, local_X, local_y = setting
    with pytest.raises(UserInputError, match="freeze depths"):
        transfer_representations(library.states[0], CONFIG, local_X, local_y, folds=4, depths=[5])
    with pytest.raises(UserInputError, match="cannot be split into 30 folds"):
        transfer_representations(library.states[0], CONFIG, local_X, local_y, folds=30)
    y = local_y.copy()
    y[2] = np.nan
    with pytest.raises(UserInputError, match="NaN"):
        select_base_model(library.ensemble(), local_X, y)
