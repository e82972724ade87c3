"""Search space as data: contains the paper's architectures, samples runnable trials, rejects bad spaces."""

import json

import numpy as np
import pytest

from dtl_dist.errors import UserInputError
from dtl_dist.nn import paper_architectures as paper
from dtl_dist.nn.builder import CNNConfig, ConvBlock, parameter_count
from dtl_dist.nn.space import Categorical, Float, Int, SearchSpace, default_space
from dtl_dist.nn.trainer import TrainConfig

TRAIN = TrainConfig(lr=1e-3, batch_size=32, optimizer="adam", weight_decay=1e-4, max_epochs=200, patience=20, seed=3)


@pytest.mark.parametrize("name", ["global", "china", "sweden", "usa", "t4_china", "t4_sweden", "t4_usa"])
def test_paper_architectures_are_inside_the_space(name):
    config = (paper.TABLE_4 if name.startswith("t4_") else paper.TABLE_2)[name.removeprefix("t4_")]
    space = default_space(preprocessing=["snv", "none"])
    flat = SearchSpace.from_config(config, TRAIN, preprocessing="snv")
    assert space.validate(flat, paper.N_BANDS) == []
    assert space.to_config(flat, seed=3) == (config, TRAIN)


def test_samples_are_json_serialisable_and_inside_the_space():
    space = default_space()
    rng = np.random.default_rng(0)
    counts = set()
    for _ in range(200):
        flat = space.sample(rng)
        assert json.loads(json.dumps(flat)) == flat
        assert all(space.params[k].contains(v) for k, v in flat.items())
        assert space.active(flat) == flat
        counts.add((flat["n_conv_blocks"], flat["n_fc_blocks"]))
        n_conv = flat["n_conv_blocks"]
        assert f"conv{n_conv}_filters" not in flat and (n_conv == 0 or f"conv{n_conv - 1}_filters" in flat)
    assert len(counts) == 5 * 6  # every block count combination 0-4 x 0-5 is reached


def test_sample_with_bands_gives_runnable_trials():
    space = default_space()
    rng = np.random.default_rng(1)
    for _ in range(30):
        flat = space.sample(rng, 211)
        assert space.validate(flat, 211) == []
        cnn, train = space.to_config(flat)
        assert parameter_count(cnn, 211) > 0 and train.problems() == []


def test_validate_gives_reasons():
    space = default_space()
    flat = SearchSpace.from_config(CNNConfig([ConvBlock(8, 10, stride=8)] * 3), TRAIN)
    assert any("conv block 3" in r and "nothing" in r for r in space.validate(flat, 211))
    assert space.validate(dict(flat, conv0_stride=9), 211) == [
        "conv0_stride=9 is outside the space {'type': 'int', 'low': 1, 'high': 8, 'log': False}"
    ]
    missing = dict(flat)
    del missing["lr"]
    assert space.validate(missing, 211) == ["lr: missing"]
    small = SearchSpace.from_config(paper.DTL_IG_CHINA, TRAIN)
    assert space.validate(small, 211, max_params=1000) == ["536893 parameters, more than max_params=1000"]
    # names of blocks beyond the block counts are ignored (Ray Tune draws every name)
    assert space.validate(dict(small, conv3_filters=10**6), 211) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"filters": Int(64, 8)}, "low 64 > high 8"),
        ({"lr": Float(0.0, 1e-2, log=True)}, "log scale needs low > 0"),
        ({"activation": Categorical(())}, "no choices"),
        ({"conv_activation": Categorical(("tanh",))}, "choices among"),
        ({"dropout_rate": Float(0.0, 1.0)}, "< 1.0"),
        ({"stride": Int(0, 4)}, ">= 1"),
        ({"n_conv_blocks": Float(0, 2)}, "integers"),
        ({"kernel": Int(3, 5)}, "unknown parameter 'kernel'"),
    ],
)
def test_empty_or_contradictory_space_is_rejected(overrides, message):
    with pytest.raises(UserInputError, match=message):
        default_space(overrides)


def test_missing_parameters_and_impossible_space():
    params = default_space().params
    del params["conv2_kernel_size"]
    with pytest.raises(UserInputError, match="conv2_kernel_size"):
        SearchSpace(params)
    impossible = default_space({"n_conv_blocks": Int(1, 2), "kernel_size": Int(300, 400), "padding": Categorical(("valid",))})
    with pytest.raises(UserInputError, match="no runnable 1D-CNN for 211 bands"):
        impossible.sample(np.random.default_rng(0), 211, max_tries=20)


def test_overrides_by_kind_and_more_blocks():
    space = default_space({"n_conv_blocks": Int(0, 6), "fc_activation": Categorical(("elu",)), "conv0_filters": Int(8, 8)})
    assert "conv5_filters" in space.params and "conv6_filters" not in space.params
    assert space.params["fc3_activation"] == Categorical(("elu",))
    assert space.params["conv3_activation"] == Categorical(("relu", "leaky_relu", "elu", "selu", "swish"))
    assert space.params["conv0_filters"] == Int(8, 8) and space.params["conv1_filters"] == Int(4, 256, log=True)


def test_round_trip_through_json():
    space = default_space(preprocessing=["snv"])
    again = SearchSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again.params == space.params
    with pytest.raises(UserInputError, match="type int, float or categorical"):
        SearchSpace.from_dict({"lr": {"type": "normal"}})


def test_log_int_sampling_covers_the_range():
    param = Int(8, 1024, log=True)
    values = np.array([param.sample(np.random.default_rng(i)) for i in range(2000)])
    assert values.min() >= 8 and values.max() <= 1024
    assert np.mean(values < 90) == pytest.approx(0.5, abs=0.05)  # log-uniform: median near sqrt(8 * 1025)


def test_optuna_define_by_run():
    import optuna  # a hard dependency (requirements.lock): missing, this fails
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = default_space()
    trials = []

    def objective(trial):
        flat = space.suggest(trial)
        trials.append(flat)
        return len(space.validate(flat, 211))

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=10)
    for flat, trial in zip(trials, study.trials):
        assert trial.params == flat  # only active names are suggested
        assert all(space.params[k].contains(v) for k, v in flat.items())


def test_a_searchs_random_draws_are_capped_in_size():
    """The study's search (its 4 starters, then seeded draws) on 209 bands: uncapped, draw 28 (trial_00032) has
    21.8 million parameters, the network that held 10 GB for over 24 min on 30 samples; capped, no trial has more
    than DRAW_MAX_PARAMS, the trials before it are the same draws, and it is drawn again."""
    from dtl_dist.nn.search import CandidateRunner, SearchSettings
    from dtl_dist.nn.space import DRAW_MAX_PARAMS, SMALL_DATA_STARTERS

    space = default_space({"scaling": Categorical(("standard",))})
    rng = np.random.default_rng(0)
    uncapped = [*SMALL_DATA_STARTERS, *(space.sample(rng, 209) for _ in range(96))]
    sizes = [parameter_count(space.to_config(flat)[0], 209) for flat in uncapped]
    assert sizes[32] > 20_000_000 and max(sizes[:32]) < DRAW_MAX_PARAMS
    capped = CandidateRunner("unused", starters=SMALL_DATA_STARTERS).configs(space, SearchSettings(trials=100), 209)
    assert len(capped) == 100 and capped[:32] == uncapped[:32] and capped[32] != uncapped[32]
    assert max(parameter_count(space.to_config(flat)[0], 209) for flat in capped) <= DRAW_MAX_PARAMS
