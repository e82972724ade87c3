"""Build a 1D-CNN from a plain config (paper section 2.3.1, Tables 2 and 4).

The optimisation framework of Shen and Viscarra Rossel (2021) stacks three kinds of blocks: Conv-blocks,
FC-blocks and an output block. A :class:`CNNConfig` lists them as JSON-serialisable dataclasses and
:func:`build_cnn` turns it into a :class:`CNN` whose ``blocks`` are, in order::

    conv blocks ..., flatten, fc blocks ..., output

so transfer learning can fix the first ``freeze_depth`` of them (:meth:`CNN.freeze`).

Layer order follows the paper's tables, where the activation belongs to the convolutional /
fully-connected layer and batch normalisation and dropout are listed after it:

- Conv-block: [pad] Conv1d -> activation -> [BatchNorm1d] -> [MaxPool1d | AvgPool1d] -> [Dropout]
- FC-block: Linear -> activation -> [BatchNorm1d] -> [Dropout]
- output block: Linear(., 1), linear activation.

Scaling (``CNNConfig.scaling="standard"``, the default): the model standardises each band of its input and
predicts a standardised SOC that it maps back to %, with means and standard deviations fixed from the training
data before training (:func:`set_scaling`) and stored with the weights as buffers. On 30 local samples this is
what turns a CNN that predicts nearly one value into one that matches PLS (benchmarks/README.md,
"bench_small_data"). ``"none"`` feeds the SNV spectra and SOC as they are.

Padding ``"valid"`` uses no padding: output length ``floor((L - kernel) / stride) + 1``. Padding ``"same"``
follows Keras/TensorFlow, also for ``stride > 1``: output length ``ceil(L / stride)``, obtained by zero
padding ``max((ceil(L / stride) - 1) * stride + kernel - L, 0)`` positions, the smaller half on the left
(an explicit :class:`torch.nn.ConstantPad1d` before the convolution). Pooling windows step by their
own size (Keras' default) with no padding. Activations: ``relu``, ``leaky_relu`` (torch's slope 0.01),
``elu``, ``selu`` and ``swish`` (= SiLU, ``x * sigmoid(x)``).

Dropout layers are :class:`SeededDropout`: they draw masks from a ``torch.Generator`` the trainer gives
each model, so k folds trained together or one after another see the same masks.

References
----------
Shen Z. et al. (2022) Deep transfer learning of global spectra for local soil carbon monitoring,
section 2.3.1 and Tables 2 and 4. Shen Z., Viscarra Rossel R.A. (2021) Automated spectroscopic modelling
with optimised convolutional neural networks. Sci. Rep. 11.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from dtl_dist.errors import UserInputError

ACTIVATIONS = ("relu", "leaky_relu", "elu", "selu", "swish")
PADDINGS = ("valid", "same")
POOLINGS = (None, "max", "avg")
SCALINGS = ("standard", "none")

_ACTIVATION_MODULES = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "swish": nn.SiLU,
}


def _from_dict(cls, data, where):
    """Build dataclass ``cls`` from a mapping, naming unknown or missing keys."""
    if not isinstance(data, dict):
        raise UserInputError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserInputError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(names)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise UserInputError(f"{where}: {exc}") from None


@dataclass
class ConvBlock:
    """One Conv-block: convolution, activation, optional batch norm, pooling and dropout.

    Parameters
    ----------
    filters : int
        Number of convolutional filters (output channels).
    kernel_size, stride : int
        Convolution kernel width and step, in bands.
    padding : {"valid", "same"}
        ``"same"`` gives ``ceil(L / stride)`` outputs (Keras convention), see the module docstring.
    activation : {"relu", "leaky_relu", "elu", "selu", "swish"}
    batch_norm : bool
        Batch normalisation after the activation.
    pooling : {None, "max", "avg"}
        Pooling layer with window and step ``pool_size``.
    pool_size : int
    dropout : float
        Dropout rate in [0, 1); 0 means no dropout layer.
    """

    filters: int
    kernel_size: int
    stride: int = 1
    padding: str = "valid"
    activation: str = "relu"
    batch_norm: bool = False
    pooling: str | None = None
    pool_size: int = 2
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ConvBlock:
        return _from_dict(cls, data, "conv block")


@dataclass
class FCBlock:
    """One FC-block: fully-connected layer, activation, optional batch norm and dropout.

    Parameters
    ----------
    nodes : int
        Width of the fully-connected layer.
    activation : {"relu", "leaky_relu", "elu", "selu", "swish"}
    batch_norm : bool
    dropout : float
        Dropout rate in [0, 1); 0 means no dropout layer.
    """

    nodes: int
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FCBlock:
        return _from_dict(cls, data, "fc block")


@dataclass
class CNNConfig:
    """A 1D-CNN architecture: Conv-blocks, then FC-blocks, then a one-node linear output block.

    Examples
    --------
    >>> cfg = CNNConfig([ConvBlock(232, 3, stride=2, activation="swish", dropout=0.001)],
    ...                 [FCBlock(22, "elu", dropout=0.38)])
    >>> CNNConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    conv_blocks: list[ConvBlock] = field(default_factory=list)
    fc_blocks: list[FCBlock] = field(default_factory=list)
    scaling: str = "standard"

    def to_dict(self) -> dict:
        return {
            "conv_blocks": [b.to_dict() for b in self.conv_blocks],
            "fc_blocks": [b.to_dict() for b in self.fc_blocks],
            "scaling": self.scaling,
        }

    @classmethod
    def from_dict(cls, data: dict) -> CNNConfig:
        """Read :meth:`to_dict` output; a config written before ``scaling`` existed means ``"none"``."""
        if not isinstance(data, dict) or set(data) - {"conv_blocks", "fc_blocks", "scaling"}:
            raise UserInputError(
                f"cnn config: expected a mapping with keys 'conv_blocks', 'fc_blocks' and 'scaling', got {data!r:.200}"
            )
        return cls(
            [ConvBlock.from_dict(b) for b in data.get("conv_blocks", [])],
            [FCBlock.from_dict(b) for b in data.get("fc_blocks", [])],
            data.get("scaling", "none"),
        )

    @property
    def n_blocks(self) -> int:
        """Number of entries in :attr:`CNN.blocks`: conv blocks, flatten, fc blocks and output."""
        return len(self.conv_blocks) + len(self.fc_blocks) + 2


def same_padding(length: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """Zero padding (left, right) of Keras ``padding="same"``: output length ``ceil(length / stride)``."""
    total = max((math.ceil(length / stride) - 1) * stride + kernel_size - length, 0)
    return total // 2, total - total // 2


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _block_problems(block, where: str) -> list[str]:
    problems = []
    if isinstance(block, ConvBlock):
        for name in ("filters", "kernel_size", "stride", "pool_size"):
            value = getattr(block, name)
            if not _is_int(value) or value < 1:
                problems.append(f"{where}: {name}={value!r}, expected an integer >= 1")
        if block.padding not in PADDINGS:
            problems.append(f"{where}: padding={block.padding!r}, expected one of {PADDINGS}")
        if block.pooling not in POOLINGS:
            problems.append(f"{where}: pooling={block.pooling!r}, expected one of {POOLINGS}")
    else:
        if not _is_int(block.nodes) or block.nodes < 1:
            problems.append(f"{where}: nodes={block.nodes!r}, expected an integer >= 1")
    if block.activation not in ACTIVATIONS:
        problems.append(f"{where}: activation={block.activation!r}, expected one of {ACTIVATIONS}")
    if not isinstance(block.batch_norm, bool):
        problems.append(f"{where}: batch_norm={block.batch_norm!r}, expected true or false")
    if isinstance(block.dropout, bool) or not isinstance(block.dropout, (int, float)) or not 0 <= block.dropout < 1:
        problems.append(f"{where}: dropout={block.dropout!r}, expected a rate in [0, 1)")
    return problems


def _block_length(block: ConvBlock, length: int) -> int:
    """Spectrum length after one conv block (after its pooling); <= 0 when nothing is left."""
    if block.padding == "same":
        length = math.ceil(length / block.stride)
    else:
        length = (length - block.kernel_size) // block.stride + 1
    if block.pooling is not None and length > 0:
        length = (length - block.pool_size) // block.pool_size + 1
    return length


def _conv_lengths(config: CNNConfig, n_bands: int) -> list[int]:
    """Spectrum length after each conv block, stopping at the first that leaves nothing."""
    lengths, length = [], n_bands
    for block in config.conv_blocks:
        length = _block_length(block, length)
        lengths.append(length)
        if length < 1:
            break
    return lengths


def config_problems(config: CNNConfig, n_bands: int) -> list[str]:
    """Reasons why ``config`` cannot run on spectra of ``n_bands`` bands (empty list: it can).

    Checks field types and ranges and that no conv block shrinks the spectrum to nothing.
    """
    if not isinstance(config, CNNConfig):
        return [f"expected a CNNConfig, got {type(config).__name__}"]
    if not _is_int(n_bands) or n_bands < 1:
        return [f"n_bands={n_bands!r}, expected an integer >= 1"]
    problems = [] if config.scaling in SCALINGS else [f"scaling={config.scaling!r}, expected one of {SCALINGS}"]
    for i, block in enumerate(config.conv_blocks):
        if not isinstance(block, ConvBlock):
            problems.append(f"conv block {i + 1}: expected a ConvBlock, got {type(block).__name__}")
        else:
            problems += _block_problems(block, f"conv block {i + 1}")
    for i, block in enumerate(config.fc_blocks):
        if not isinstance(block, FCBlock):
            problems.append(f"fc block {i + 1}: expected an FCBlock, got {type(block).__name__}")
        else:
            problems += _block_problems(block, f"fc block {i + 1}")
    if problems:
        return problems
    length = n_bands
    for i, (block, out) in enumerate(zip(config.conv_blocks, _conv_lengths(config, n_bands))):
        if out < 1:
            what = f"kernel {block.kernel_size}, stride {block.stride}, {block.padding}"
            if block.pooling is not None:
                what += f", {block.pooling} pooling {block.pool_size}"
            problems.append(
                f"conv block {i + 1} ({what}) shrinks a spectrum of {length} values to nothing "
                f"(input has {n_bands} bands)"
            )
        length = out
    return problems


def check_config(config: CNNConfig, n_bands: int) -> None:
    """Raise :class:`UserInputError` listing every problem of :func:`config_problems`."""
    problems = config_problems(config, n_bands)
    if problems:
        raise UserInputError("invalid 1D-CNN config: " + "; ".join(problems))


def output_length(config: CNNConfig, n_bands: int) -> int:
    """Spectrum length after the conv blocks (the flatten size is ``output_length * last filters``).

    Raises :class:`UserInputError` when the config cannot run on ``n_bands`` bands.
    """
    check_config(config, n_bands)
    lengths = _conv_lengths(config, n_bands)
    return lengths[-1] if lengths else n_bands


def flat_features(config: CNNConfig, n_bands: int) -> int:
    """Number of features after the flatten block."""
    channels = config.conv_blocks[-1].filters if config.conv_blocks else 1
    return channels * output_length(config, n_bands)


def parameter_count(config: CNNConfig, n_bands: int) -> int:
    """Number of trainable parameters of ``build_cnn(config, n_bands)``, computed without building it."""
    total, channels = 0, 1
    for block in config.conv_blocks:
        total += block.filters * (channels * block.kernel_size + 1) + (2 * block.filters if block.batch_norm else 0)
        channels = block.filters
    width = flat_features(config, n_bands)
    for block in config.fc_blocks:
        total += block.nodes * (width + 1) + (2 * block.nodes if block.batch_norm else 0)
        width = block.nodes
    return total + width + 1


def dropout_mask(shape, p: float, generator: torch.Generator | None, device=None) -> torch.Tensor:
    """Inverted-dropout mask: 0 with probability ``p``, else ``1 / (1 - p)``, drawn from ``generator``."""
    keep = torch.rand(shape, generator=generator, device=device) >= p
    return keep.to(torch.float32) / (1.0 - p)


class SeededDropout(nn.Module):
    """Dropout whose masks come from ``self.generator`` (global RNG when None).

    The trainer sets one generator per fold (:func:`set_generator`) so a fold's masks do not depend on
    how many other folds train at the same time.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * dropout_mask(x.shape, self.p, self.generator, x.device).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _activation(name: str) -> nn.Module:
    return _ACTIVATION_MODULES[name]()


class CNN(nn.Module):
    """A 1D-CNN built by :func:`build_cnn`; input ``(batch, 1, n_bands)`` or ``(batch, n_bands)``.

    Attributes
    ----------
    blocks : nn.ModuleList
        ``conv blocks ..., flatten, fc blocks ..., output``; each entry is an ``nn.Sequential``.
    config : CNNConfig
    n_bands : int
    frozen_blocks : int
        Number of leading blocks fixed by :meth:`freeze` (0: none).

    The forward pass returns one value per spectrum, shape ``(batch,)``.
    """

    def __init__(self, config: CNNConfig, n_bands: int):
        super().__init__()
        check_config(config, n_bands)
        self.config = config
        self.n_bands = n_bands
        self.frozen_blocks = 0
        blocks, channels, length = [], 1, n_bands
        for block in config.conv_blocks:
            layers = []
            if block.padding == "same":
                left, right = same_padding(length, block.kernel_size, block.stride)
                if left or right:
                    layers.append(nn.ConstantPad1d((left, right), 0.0))
            layers += [nn.Conv1d(channels, block.filters, block.kernel_size, stride=block.stride)]
            layers.append(_activation(block.activation))
            if block.batch_norm:
                layers.append(nn.BatchNorm1d(block.filters))
            if block.pooling == "max":
                layers.append(nn.MaxPool1d(block.pool_size))
            elif block.pooling == "avg":
                layers.append(nn.AvgPool1d(block.pool_size))
            if block.dropout > 0:
                layers.append(SeededDropout(block.dropout))
            blocks.append(nn.Sequential(*layers))
            channels = block.filters
            length = _block_length(block, length)
        blocks.append(nn.Sequential(nn.Flatten()))
        width = channels * length
        for block in config.fc_blocks:
            layers = [nn.Linear(width, block.nodes), _activation(block.activation)]
            if block.batch_norm:
                layers.append(nn.BatchNorm1d(block.nodes))
            if block.dropout > 0:
                layers.append(SeededDropout(block.dropout))
            blocks.append(nn.Sequential(*layers))
            width = block.nodes
        blocks.append(nn.Sequential(nn.Linear(width, 1)))
        self.blocks = nn.ModuleList(blocks)
        if config.scaling == "standard":  # identity until set_scaling fixes them from the training data
            self.register_buffer("x_mean", torch.zeros(n_bands))
            self.register_buffer("x_scale", torch.ones(n_bands))
            self.register_buffer("y_mean", torch.zeros(()))
            self.register_buffer("y_scale", torch.ones(()))

    @property
    def scaled(self) -> bool:
        return self.config.scaling == "standard"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        if self.scaled:
            x = (x - self.x_mean) / self.x_scale
        for block in self.blocks:
            x = block(x)
        x = x.squeeze(-1)
        return x * self.y_scale + self.y_mean if self.scaled else x

    def freeze(self, n_blocks: int) -> CNN:
        """Fix the first ``n_blocks`` blocks: no gradients, batch norm kept in inference mode.

        Dropout in a fixed block stays active in training (as in Keras). ``freeze(0)`` unfreezes all.
        """
        if not _is_int(n_blocks) or not 0 <= n_blocks <= len(self.blocks):
            raise UserInputError(f"frozen blocks={n_blocks!r}, expected an integer in 0..{len(self.blocks)}")
        self.frozen_blocks = n_blocks
        for i, block in enumerate(self.blocks):
            for p in block.parameters():
                p.requires_grad_(i >= n_blocks)
        return self.train(self.training)

    def train(self, mode: bool = True) -> CNN:
        super().train(mode)
        for block in self.blocks[: self.frozen_blocks]:
            for layer in block:
                if isinstance(layer, nn.BatchNorm1d):
                    layer.eval()
        return self


def build_cnn(config: CNNConfig, n_bands: int) -> CNN:
    """Build the 1D-CNN described by ``config`` for spectra of ``n_bands`` bands.

    Parameters are initialised by torch's defaults from the global RNG (seed it, or build inside
    ``torch.random.fork_rng``). Raises :class:`UserInputError` with every reason when the config cannot run.

    Examples
    --------
    >>> model = build_cnn(CNNConfig([ConvBlock(8, 5, stride=2)], [FCBlock(16)]), 211)
    >>> model(torch.zeros(4, 1, 211)).shape
    torch.Size([4])
    """
    return CNN(config, n_bands)


@torch.no_grad()
def set_scaling(model: CNN, X=None, y=None) -> None:
    """Fix a scaled model's input (band means and standard deviations of ``X``) and output (mean and standard
    deviation of ``y``) scaling from its training data, given as arrays or as ``(mean, sd)`` already computed
    (e.g. streamed over a library); ``None`` leaves that side as it is (e.g. the input scaling of a transferred
    base model). A constant band or target keeps a scale of 1."""
    if not model.scaled:
        return
    for values, mean, scale in ((X, model.x_mean, model.x_scale), (y, model.y_mean, model.y_scale)):
        if values is None:
            continue
        if not isinstance(values, tuple):
            values = torch.as_tensor(values, dtype=torch.float64)
            values = (values.mean(0), values.std(0, correction=0))
        mean.copy_(torch.as_tensor(values[0]))
        scale.copy_(_safe_scale(torch.as_tensor(values[1], dtype=torch.float64)))


def _safe_scale(sd: torch.Tensor) -> torch.Tensor:
    return torch.where(sd > 1e-12 * sd.abs().max().clamp_min(1), sd, torch.ones_like(sd))


def set_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    """Make every :class:`SeededDropout` of ``model`` draw its masks from ``generator``."""
    for module in model.modules():
        if isinstance(module, SeededDropout):
            module.generator = generator
