"""1D-CNN builder: the paper's Tables 2 and 4 build and run; lengths, padding and parameter counts by hand."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from dtl_dist.errors import UserInputError
from dtl_dist.nn import paper_architectures as paper
from dtl_dist.nn.builder import (
    CNNConfig,
    ConvBlock,
    FCBlock,
    SeededDropout,
    build_cnn,
    config_problems,
    flat_features,
    output_length,
    parameter_count,
    same_padding,
)

ARCHITECTURES = {**{f"table2_{k}": v for k, v in paper.TABLE_2.items()}, **{f"table4_{k}": v for k, v in paper.TABLE_4.items()}}

# By hand, 211 bands: the last conv block's (filters, length) by the conv arithmetic (valid: (L - k) // s + 1,
# same: ceil(L / s)), and the parameters: conv F * (C * k + 1), linear out * (in + 1), batch norm 2 per
# channel or node, output in + 1
HAND = {
    # k10 s4 valid: (211 - 10) // 4 + 1 = 51; flatten 148 * 51 = 7548
    "table2_global": ((148, 51), 148 * 11 + 691 * 7549 + 891 * 692 + 2 * 891 + 533 * 892 + 2 * 533
                      + 764 * 534 + 2 * 764 + 650 * 765 + 651),
    # k7 s7 valid: (211 - 7) // 7 + 1 = 30; k8 s3: (30 - 8) // 3 + 1 = 8; k5 s4: (8 - 5) // 4 + 1 = 1
    "table2_china": ((238, 1), 25 * 8 + 248 * (25 * 8 + 1) + 238 * (248 * 5 + 1) + 212 * 239 + 140 * 213
                     + 165 * 141 + 50 * 166 + 51),
    # k5 s3 valid: (211 - 5) // 3 + 1 = 69; flatten 161 * 69 = 11109
    "table2_sweden": ((161, 69), 161 * 6 + 896 * 11110 + 2 * 896 + 474 * 897 + 2 * 474 + 475),
    "table2_usa": ((252, 1), 685582),  # test_parameter_count_by_hand_table2_usa
    "table4_china": ((232, 105), 536893),  # test_parameter_count_by_hand_table4_china
    # k10 s6 same: ceil(211 / 6) = 36; flatten 214 * 36 = 7704
    "table4_sweden": ((214, 36), 214 * 11 + 446 * 7705 + 2 * 446 + 208 * 447 + 209),
    # k7 s3 same: ceil(211 / 3) = 71; flatten 212 * 71 = 15052
    "table4_usa": ((212, 71), 212 * 8 + 1005 * 15053 + 1015 * 1006 + 1016),
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_paper_architecture_builds_and_runs(name):
    config = ARCHITECTURES[name]
    torch.manual_seed(0)
    model = build_cnn(config, paper.N_BANDS).eval()
    x = torch.randn(3, 1, paper.N_BANDS)
    out = model(x)
    assert out.shape == (3,)
    assert torch.isfinite(out).all()
    assert torch.equal(model(x[:, 0, :]), out)  # (batch, bands) input is accepted too
    (filters, length), parameters = HAND[name]
    n_conv = len(config.conv_blocks)
    assert nn.Sequential(*model.blocks[:n_conv])(x).shape == (3, filters, length)
    assert output_length(config, paper.N_BANDS) == length and flat_features(config, paper.N_BANDS) == filters * length
    assert sum(p.numel() for p in model.parameters()) == parameters == parameter_count(config, paper.N_BANDS)
    assert len(model.blocks) == len(config.conv_blocks) + len(config.fc_blocks) + 2 == config.n_blocks
    assert isinstance(model.blocks[len(config.conv_blocks)][0], nn.Flatten)
    assert CNNConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_paper_block_totals():
    # section 3.2: "The number of total blocks ranged from 4 (Sweden) to 8 (China)" (output block included)
    totals = {k: len(c.conv_blocks) + len(c.fc_blocks) + 1 for k, c in paper.TABLE_2.items()}
    assert totals == {"global": 7, "china": 8, "sweden": 4, "usa": 6}
    # section 3.4: "one Conv-block and up to two FC-blocks", no pooling
    assert all(len(c.conv_blocks) == 1 and len(c.fc_blocks) <= 2 for c in paper.TABLE_4.values())


def test_parameter_count_by_hand_table4_china():
    # conv 232 filters x (1 channel x kernel 3) + 232 biases = 928; valid, stride 2: (211 - 3) // 2 + 1 = 105
    # flatten 232 * 105 = 24360 -> FC 22: 24360 * 22 + 22 = 535942; output 22 + 1 = 23
    assert output_length(paper.DTL_IG_CHINA, 211) == 105
    assert flat_features(paper.DTL_IG_CHINA, 211) == 24360
    model = build_cnn(paper.DTL_IG_CHINA, 211)
    assert sum(p.numel() for p in model.parameters()) == 928 + 535942 + 23 == 536893


def test_parameter_count_by_hand_table2_usa():
    # conv1 k8 s7 valid: 216*8 + 216 = 1944, L = (211-8)//7 + 1 = 30
    # conv2 k8 s8 same: 216*216*8 + 216 = 373464, BN 2*216 = 432, L = ceil(30/8) = 4
    # conv3 k4 s4 same: 252*216*4 + 252 = 217980, L = ceil(4/4) = 1 -> flatten 252
    # fc1 179: 252*179 + 179 = 45287, BN 358; fc2 252: 179*252 + 252 = 45360, BN 504; output 253
    expected = 1944 + 373464 + 432 + 217980 + 45287 + 358 + 45360 + 504 + 253
    assert output_length(paper.USA, 211) == 1
    model = build_cnn(paper.USA, 211)
    assert sum(p.numel() for p in model.parameters()) == expected == 685582


def test_layer_order_follows_the_tables():
    config = CNNConfig(
        [ConvBlock(4, 3, stride=2, padding="same", activation="selu", batch_norm=True, pooling="avg", dropout=0.2)],
        [FCBlock(5, "leaky_relu", batch_norm=True, dropout=0.3)],
    )
    model = build_cnn(config, 20)
    conv, flatten, fc, out = model.blocks
    assert [type(m) for m in conv] == [nn.ConstantPad1d, nn.Conv1d, nn.SELU, nn.BatchNorm1d, nn.AvgPool1d, SeededDropout]
    assert [type(m) for m in flatten] == [nn.Flatten]
    assert [type(m) for m in fc] == [nn.Linear, nn.LeakyReLU, nn.BatchNorm1d, SeededDropout]
    assert [type(m) for m in out] == [nn.Linear] and out[0].out_features == 1


@pytest.mark.parametrize(("length", "kernel", "stride", "expected"), [(5, 3, 2, (1, 1)), (6, 3, 2, (0, 1)), (10, 4, 1, (1, 2)), (7, 2, 8, (0, 0)), (30, 8, 8, (1, 1)), (8, 2, 4, (0, 0))])
def test_same_padding_keras_convention(length, kernel, stride, expected):
    # TensorFlow: total = max((ceil(L/s) - 1) * s + k - L, 0), the extra position on the right
    assert same_padding(length, kernel, stride) == expected


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kernel", [2, 3, 4, 7])
def test_same_stride_one_matches_torch_same(kernel):
    torch.manual_seed(1)
    model = build_cnn(CNNConfig([ConvBlock(3, kernel, padding="same")]), 17)
    pad, conv = model.blocks[0][:2]
    assert isinstance(pad, nn.ConstantPad1d)
    reference = nn.Conv1d(1, 3, kernel, padding="same")
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(2, 1, 17)
    torch.testing.assert_close(model.blocks[0](x), torch.relu(reference(x)))


@pytest.mark.parametrize("stride", [1, 2, 3, 5, 8])
def test_same_padding_output_length(stride):
    for length in (1, 7, 30, 211):
        config = CNNConfig([ConvBlock(2, 5, stride=stride, padding="same")])
        model = build_cnn(config, length)
        assert model.blocks[0](torch.zeros(1, 1, length)).shape[-1] == -(-length // stride) == output_length(config, length)


def test_pooling_length():
    config = CNNConfig([ConvBlock(2, 3, pooling="max", pool_size=2), ConvBlock(2, 3, stride=2, pooling="avg", pool_size=3)])
    # 211 -> 209 -> 104 (pool 2) -> (104 - 3)//2 + 1 = 51 -> 17 (pool 3)
    assert output_length(config, 211) == 17
    assert build_cnn(config, 211).blocks[1](build_cnn(config, 211).blocks[0](torch.zeros(1, 1, 211))).shape == (1, 2, 17)


def test_config_that_cannot_run_is_rejected_with_reason():
    # 211 -> (211 - 10) // 8 + 1 = 26 -> (26 - 10) // 8 + 1 = 3 -> a kernel of 10 does not fit in 3
    config = CNNConfig([ConvBlock(8, 10, stride=8)] * 3)
    problems = config_problems(config, 211)
    assert len(problems) == 1 and "conv block 3" in problems[0] and "3 values to nothing" in problems[0]
    with pytest.raises(UserInputError, match="conv block 3"):
        build_cnn(config, 211)
    with pytest.raises(UserInputError, match="activation"):
        build_cnn(CNNConfig([], [FCBlock(4, "tanh")]), 10)
    assert config_problems(CNNConfig([ConvBlock(4, 3, padding="full", dropout=1.0)]), 10) == [
        "conv block 1: padding='full', expected one of ('valid', 'same')",
        "conv block 1: dropout=1.0, expected a rate in [0, 1)",
    ]
    with pytest.raises(UserInputError, match="unknown field"):
        CNNConfig.from_dict({"conv_blocks": [{"filters": 3, "kernel_size": 3, "strides": 2}]})


def test_no_conv_blocks_is_a_dense_network():
    model = build_cnn(CNNConfig([], [FCBlock(3)]), 11)
    assert sum(p.numel() for p in model.parameters()) == 11 * 3 + 3 + 3 + 1
    assert model(torch.zeros(4, 1, 11)).shape == (4,)


def test_freeze_fixes_parameters_and_batch_norm():
    config = CNNConfig([ConvBlock(4, 3, batch_norm=True)], [FCBlock(5, batch_norm=True)])
    model = build_cnn(config, 12).freeze(2)
    model.train()
    assert not any(p.requires_grad for p in model.blocks[0].parameters())
    assert all(p.requires_grad for p in model.blocks[2].parameters())
    assert not model.blocks[0][2].training and model.blocks[2][2].training
    model.freeze(0)
    assert all(p.requires_grad for p in model.parameters()) and model.blocks[0][2].training
    with pytest.raises(UserInputError):
        model.freeze(5)


def test_seeded_dropout_masks():
    layer = SeededDropout(0.25)
    x = torch.ones(64, 3, 10)
    layer.generator = torch.Generator().manual_seed(3)
    first = layer(x)
    layer.generator = torch.Generator().manual_seed(3)
    assert torch.equal(first, layer(x))
    np.testing.assert_allclose(np.unique(first.numpy()), [0.0, 1 / 0.75], rtol=1e-6)
    assert 0.2 < (first == 0).float().mean().item() < 0.3
    assert torch.equal(layer.eval()(x), x)
