"""Transferring representations (paper 2.3.3-2.3.4): base model choice per split, fixed front blocks, freeze
depth chosen per split by inner RMSE, the same result on Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dtl_dist.engines.ray import map_blocks
from dtl_dist.errors import UserInputError
from dtl_dist.nn.builder import CNNConfig, ConvBlock, FCBlock
from dtl_dist.nn.folds import kfold_assignment
from dtl_dist.nn.nested import Design, OuterSplit, fit_design
from dtl_dist.nn.trainer import TrainConfig, cross_validate
from dtl_dist.nn.transfer import freeze_depths, select_base_model, transfer_representations, with_base_models

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


def _design(local_X, local_y):
    """Two outer folds of the 24 local samples (12 + 12) and the final split, 3 inner folds each."""
    outer = kfold_assignment(24, 2, seed=1)
    splits = []
    for s in (0, 1, None):
        train = np.arange(24) if s is None else np.flatnonzero(outer != s)
        held_out = np.empty(0, dtype=np.int64) if s is None else np.flatnonzero(outer == s)
        splits.append(OuterSplit(train, kfold_assignment(train.size, 3, seed=7), held_out))
    return Design(local_X, local_y, tuple(splits))


def _rmse_by_hand(library, X, y) -> list:
    """Each library fold model's RMSE on (X, y), numpy from its predictions."""
    return [np.sqrt(np.mean((m(torch.as_tensor(X)).detach().numpy() - y) ** 2)) for m in library.ensemble().models]


def test_base_model_is_the_fold_model_with_the_smallest_local_rmse(setting):
    library, local_X, local_y = setting
    index, rmse = select_base_model(library.states, CONFIG, local_X, local_y)
    by_hand = _rmse_by_hand(library, local_X, local_y)
    np.testing.assert_allclose(rmse, by_hand, rtol=1e-5)
    assert index == int(np.argmin(by_hand))


def test_each_split_gets_the_base_model_best_on_its_own_local_samples(setting):
    library, local_X, local_y = setting
    design = with_base_models(_design(local_X, local_y), library.states, CONFIG, np.arange(24))
    for split in design.splits:
        best = int(np.argmin(_rmse_by_hand(library, local_X[split.train], local_y[split.train])))
        assert split.init_state is library.states[best]


def test_front_blocks_stay_fixed_and_each_split_takes_its_best_depth(setting):
    library, local_X, local_y = setting
    design = with_base_models(_design(local_X, local_y), library.states, CONFIG, np.arange(24))
    assert freeze_depths(CONFIG) == [1, 3, 4]  # blocks: conv, flatten, fc, fc, output; flatten adds nothing
    result = transfer_representations(design, CONFIG, TRAIN)
    assert set(result.fits) == {1, 3, 4}
    for s, depth in enumerate(result.chosen):  # per split, the lowest inner RMSE of that split alone
        assert depth == min(result.fits, key=lambda d: result.fits[d].inner_rmse[s])
    base = design.final.init_state
    for depth, fit in result.fits.items():
        blocks = [name for name in base if name.startswith("blocks.")]  # not the scaling buffers
        fixed = [name for name in blocks if int(name.split(".")[1]) < depth] + ["x_mean", "x_scale"]
        trained = [name for name in blocks if int(name.split(".")[1]) >= depth and name.endswith("weight")]
        for state in fit.final_states:
            for name in fixed:  # weights and batch-norm statistics of the fixed blocks are the base model's
                torch.testing.assert_close(state[name], base[name], rtol=0, atol=0)
            assert any(not torch.equal(state[name], base[name]) for name in trained)
        # the final split of each candidate is a plain 3-fold CV from its base weights with `depth` blocks fixed
        reference = cross_validate(local_X, local_y, CONFIG, TRAIN, design.final.inner, init_state=base,
                                   frozen_blocks=depth)
        assert result.cv_rmse[depth] == pytest.approx(reference.mean_rmse, rel=1e-5)
    # held-out predictions come from the depth chosen for that split
    for s, predictions in enumerate(result.predictions()[:-1]):
        np.testing.assert_array_equal(predictions, result.fits[result.chosen[s]].predictions[s])


def test_transfers_on_ray_give_the_same_result(ray_session, setting):
    library, local_X, local_y = setting
    design = with_base_models(_design(local_X, local_y), library.states, CONFIG, np.arange(24))
    serial = transfer_representations(design, CONFIG, TRAIN, depths=[1, 4])
    on_ray = transfer_representations(design, CONFIG, TRAIN, depths=[1, 4], map_blocks=map_blocks(num_cpus=1))
    assert on_ray.chosen == serial.chosen and on_ray.cv_rmse == serial.cv_rmse


def test_bad_input(setting):
    library, local_X, local_y = setting
    design = with_base_models(_design(local_X, local_y), library.states, CONFIG, np.arange(24))
    with pytest.raises(UserInputError, match="freeze depths"):
        transfer_representations(design, CONFIG, TRAIN, depths=[5])
    with pytest.raises(UserInputError, match="needs its base model"):
        transfer_representations(_design(local_X, local_y), CONFIG, TRAIN)
    y = local_y.copy()
    y[2] = np.nan
    with pytest.raises(UserInputError, match="NaN"):
        select_base_model(library.states, CONFIG, local_X, y)
    assert fit_design(design, CONFIG, TRAIN, frozen_blocks=1).inner_rmse.shape == (3,)
