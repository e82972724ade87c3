"""The 1D-CNN hyperparameter search space as plain data (paper section 2.3.1).

The optimisation framework (Shen and Viscarra Rossel, 2021) tunes the number of Conv- and FC-blocks
and, per block, the filters, kernel size, stride, padding, activation, batch norm, pooling (type and
size) and dropout (on/off and rate) of Conv-blocks and the nodes, activation, batch norm and dropout of
FC-blocks; plus learning rate, batch size, optimiser, weight decay, epochs and early-stopping patience, and the
model's input and SOC scaling (``scaling``: ``"standard"`` by default, ``"none"`` to switch it off).

A :class:`SearchSpace` maps flat names to :class:`Int`, :class:`Float` or :class:`Categorical`
parameters. Block parameters are named per block, ``conv{i}_filters`` (i = 0..3) and ``fc{i}_nodes``
(i = 0..4): see :data:`CONV_KEYS`, :data:`FC_KEYS`, :data:`TRAIN_KEYS`. A trial is a flat dict of the
*active* names (the blocks in use, ``pool_size`` only with pooling, ``dropout_rate`` only with dropout
on); inactive names are ignored, so a sampler that draws every name independently (e.g.
:func:`dtl_dist.engines.ray.param_space`) also works. The optional ``preprocessing`` name is passed through in the
flat dict for the caller to apply.

References
----------
Shen Z. et al. (2022), section 2.3.1; Shen Z., Viscarra Rossel R.A. (2021) Automated spectroscopic
modelling with optimised convolutional neural networks. Sci. Rep. 11.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from dtl_dist.errors import UserInputError
from dtl_dist.nn.builder import (
    ACTIVATIONS,
    PADDINGS,
    SCALINGS,
    CNNConfig,
    ConvBlock,
    FCBlock,
    config_problems,
    parameter_count,
)
from dtl_dist.nn.trainer import OPTIMIZERS, TrainConfig

CONV_KEYS = (
    "filters",
    "kernel_size",
    "stride",
    "padding",
    "activation",
    "batch_norm",
    "pooling",
    "pool_size",
    "dropout",
    "dropout_rate",
)
"""Per Conv-block names, used as ``conv{i}_{key}``; ``pooling`` is ``"none"``, ``"max"`` or ``"avg"``."""

FC_KEYS = ("nodes", "activation", "batch_norm", "dropout", "dropout_rate")
"""Per FC-block names, used as ``fc{i}_{key}``; ``dropout`` is the on/off switch."""

TRAIN_KEYS = ("lr", "batch_size", "optimizer", "weight_decay", "max_epochs", "patience")
"""Training names (fields of :class:`~dtl_dist.nn.trainer.TrainConfig`)."""

_ALLOWED = {
    "padding": PADDINGS,
    "activation": ACTIVATIONS,
    "batch_norm": (False, True),
    "dropout": (False, True),
    "pooling": ("none", "max", "avg"),
    "optimizer": OPTIMIZERS,
    "scaling": SCALINGS,
}
"""Categorical keys and the values they may take."""

_NUMERIC = {  # key: (integers only, lowest value, is the lowest value allowed, exclusive upper limit)
    "n_conv_blocks": (True, 0, True, None),
    "n_fc_blocks": (True, 0, True, None),
    "filters": (True, 1, True, None),
    "kernel_size": (True, 1, True, None),
    "stride": (True, 1, True, None),
    "pool_size": (True, 1, True, None),
    "nodes": (True, 1, True, None),
    "batch_size": (True, 1, True, None),
    "max_epochs": (True, 1, True, None),
    "patience": (True, 1, True, None),
    "dropout_rate": (False, 0.0, True, 1.0),
    "lr": (False, 0.0, False, None),
    "weight_decay": (False, 0.0, True, None),
}
_FLAT_NAME = re.compile(r"^(?:conv|fc)\d+_(.+)$")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Int:
    """Integer uniform in ``[low, high]`` (inclusive), log-uniform when ``log``."""

    low: int
    high: int
    log: bool = False

    def problems(self) -> list[str]:
        if not (_is_int(self.low) and _is_int(self.high)):
            return [f"bounds {self.low!r}..{self.high!r} must be integers"]
        if self.low > self.high:
            return [f"low {self.low} > high {self.high}"]
        if self.log and self.low <= 0:
            return [f"log scale needs low > 0, got {self.low}"]
        return []

    def sample(self, rng: np.random.Generator) -> int:
        if self.log:  # log-uniform on [low, high + 1), floored (as Ray Tune's lograndint)
            value = math.floor(math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1))))
            return int(min(value, self.high))
        return int(rng.integers(self.low, self.high + 1))

    def contains(self, value) -> bool:
        return _is_int(value) and self.low <= value <= self.high

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def to_dict(self) -> dict:
        return {"type": "int", "low": int(self.low), "high": int(self.high), "log": self.log}


@dataclass(frozen=True)
class Float:
    """Real number uniform in ``[low, high]``, log-uniform when ``log``."""

    low: float
    high: float
    log: bool = False

    def problems(self) -> list[str]:
        if not all(_is_number(v) and math.isfinite(v) for v in (self.low, self.high)):
            return [f"bounds {self.low!r}..{self.high!r} must be finite numbers"]
        if self.low > self.high:
            return [f"low {self.low} > high {self.high}"]
        if self.log and self.low <= 0:
            return [f"log scale needs low > 0, got {self.low}"]
        return []

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def contains(self, value) -> bool:
        return _is_number(value) and self.low <= value <= self.high

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def to_dict(self) -> dict:
        return {"type": "float", "low": float(self.low), "high": float(self.high), "log": self.log}


@dataclass(frozen=True)
class Categorical:
    """One of ``choices`` (strings, numbers or booleans), uniformly."""

    choices: tuple

    def __post_init__(self):
        object.__setattr__(self, "choices", tuple(self.choices))

    def problems(self) -> list[str]:
        return [] if self.choices else ["no choices"]

    def sample(self, rng: np.random.Generator):
        return self.choices[int(rng.integers(len(self.choices)))]

    def contains(self, value) -> bool:
        return any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in self.choices)

    def suggest(self, trial, name: str):
        return trial.suggest_categorical(name, list(self.choices))

    def to_dict(self) -> dict:
        return {"type": "categorical", "choices": list(self.choices)}


Param = Int | Float | Categorical
_PARAM_TYPES = {"int": Int, "float": Float, "categorical": Categorical}


def param_from_dict(data: dict, name: str = "parameter") -> Param:
    """Read an :class:`Int`, :class:`Float` or :class:`Categorical` from its ``to_dict`` form."""
    if not isinstance(data, dict) or data.get("type") not in _PARAM_TYPES:
        raise UserInputError(
            f"search space {name}: expected a mapping with type int, float or categorical, got {data!r:.200}"
        )
    kwargs = {k: v for k, v in data.items() if k != "type"}
    try:
        return _PARAM_TYPES[data["type"]](**kwargs)
    except TypeError as exc:
        raise UserInputError(f"search space {name}: {exc}") from None


def _key(name: str) -> str:
    """``conv2_filters`` -> ``filters``; other names map to themselves."""
    match = _FLAT_NAME.match(name)
    return match.group(1) if match else name


class SearchSpace:
    """Named hyperparameters of 1D-CNN trials; construction rejects an empty or contradictory space.

    Parameters
    ----------
    params : dict of str to Int, Float or Categorical
        Must hold ``n_conv_blocks``, ``n_fc_blocks``, every :data:`TRAIN_KEYS` name and, for each block
        index the block counts can reach, every ``conv{i}_``/``fc{i}_`` name; ``preprocessing`` is optional.

    Examples
    --------
    >>> space = default_space({"n_conv_blocks": Int(1, 1), "n_fc_blocks": Int(0, 1)})
    >>> flat = space.sample(np.random.default_rng(0))
    >>> flat["n_conv_blocks"], "conv1_filters" in flat
    (1, False)
    >>> reasons = space.validate(flat, 211)  # [] when the trial can run
    >>> cnn_config, train_config = space.to_config(flat)
    """

    def __init__(self, params: dict[str, Param]):
        self.params = dict(params)
        problems = []
        for name, param in self.params.items():
            if not isinstance(param, (Int, Float, Categorical)):
                problems.append(f"{name}: expected Int, Float or Categorical, got {type(param).__name__}")
                continue
            problems += [f"{name}: {p}" for p in param.problems()]
        if problems:
            raise UserInputError("search space: " + "; ".join(problems))
        required = ["n_conv_blocks", "n_fc_blocks", *TRAIN_KEYS]
        missing = [name for name in required if name not in self.params]
        if not missing:
            for count, prefix, keys in (("n_conv_blocks", "conv", CONV_KEYS), ("n_fc_blocks", "fc", FC_KEYS)):
                names = [f"{prefix}{i}_{k}" for i in range(self.max_blocks(count)) for k in keys]
                missing += [name for name in names if name not in self.params]
        if missing:
            raise UserInputError(f"search space: missing parameter(s) {missing}")
        for name, param in self.params.items():
            problems += [f"{name}: {p}" for p in self._value_problems(name, param)]
        if problems:
            raise UserInputError("search space: " + "; ".join(problems))

    def max_blocks(self, count: str) -> int:
        """Largest value of block count ``count`` (``"n_conv_blocks"`` or ``"n_fc_blocks"``)."""
        param = self.params[count]
        return int(param.high if isinstance(param, Int) else max(param.choices))

    @staticmethod
    def _value_problems(name: str, param: Param) -> list[str]:
        """What is wrong with the values ``param`` can take for ``name`` (its kind and range)."""
        key = _key(name)
        values = param.choices if isinstance(param, Categorical) else (param.low, param.high)
        if key in _ALLOWED:
            allowed = _ALLOWED[key]
            if not isinstance(param, Categorical) or not all(Categorical(allowed).contains(v) for v in values):
                return [f"expected a categorical with choices among {list(allowed)}, got {param.to_dict()}"]
        elif key in _NUMERIC:
            integers, low, low_ok, high = _NUMERIC[key]
            if integers and (isinstance(param, Float) or not all(_is_int(v) for v in values)):
                return [f"expected integers, got {param.to_dict()}"]
            if not all(_is_number(v) for v in values):
                return [f"expected numbers, got {param.to_dict()}"]
            if any(v < low or (v == low and not low_ok) or (high is not None and v >= high) for v in values):
                bound = f"{'>=' if low_ok else '>'} {low}" + (f" and < {high}" if high is not None else "")
                return [f"values must be {bound}, got {param.to_dict()}"]
        return []

    def _walk(self, choose) -> dict:
        """Choose the active names in order; ``choose(name, param)`` returns a value."""
        flat = {}

        def pick(name):
            flat[name] = choose(name, self.params[name])
            return flat[name]

        for i in range(pick("n_conv_blocks")):
            for key in CONV_KEYS:
                if key == "pool_size" and flat[f"conv{i}_pooling"] == "none":
                    continue
                if key == "dropout_rate" and not flat[f"conv{i}_dropout"]:
                    continue
                pick(f"conv{i}_{key}")
        for i in range(pick("n_fc_blocks")):
            for key in FC_KEYS:
                if key == "dropout_rate" and not flat[f"fc{i}_dropout"]:
                    continue
                pick(f"fc{i}_{key}")
        for key in TRAIN_KEYS:
            pick(key)
        for name in ("scaling", "preprocessing"):
            if name in self.params:
                pick(name)
        return flat

    def sample(self, rng: np.random.Generator, n_bands: int | None = None, *, max_tries: int = 1000,
               max_params: int | None = None) -> dict:
        """Draw one trial: a flat dict of the active names (plain Python values, JSON-serialisable).

        With ``n_bands``, redraw until :meth:`validate` accepts the trial (with at most ``max_params``
        parameters, when given); raise :class:`UserInputError` when ``max_tries`` draws all fail (the space holds
        no runnable 1D-CNN for that many bands).
        """
        reasons = []
        for _ in range(max_tries if n_bands is not None else 1):
            flat = self._walk(lambda name, param: _plain(param.sample(rng)))
            if n_bands is None:
                return flat
            reasons = self.validate(flat, n_bands, max_params=max_params)
            if not reasons:
                return flat
        raise UserInputError(
            f"search space: no runnable 1D-CNN for {n_bands} bands in {max_tries} draws; last reason: {reasons[0]}"
        )

    def suggest(self, trial) -> dict:
        """Optuna define-by-run: ask ``trial`` (an ``optuna.Trial``) for each active name; return the flat dict.

        Usable as Ray Tune's ``OptunaSearch(space=lambda trial: None ...)`` body or directly with Optuna.
        """
        return self._walk(lambda name, param: param.suggest(trial, name))

    def active(self, flat: dict) -> dict:
        """The active names of ``flat`` (drop the blocks beyond the block counts and unused switches)."""
        missing = [n for n in ("n_conv_blocks", "n_fc_blocks") if n not in flat]
        if missing:
            raise UserInputError(f"trial config: missing {missing}")
        return self._walk(lambda name, _: _lookup(flat, name))

    def validate(self, flat: dict, n_bands: int, *, max_params: int | None = None) -> list[str]:
        """Reasons why trial ``flat`` cannot run on ``n_bands`` bands (empty list: it can).

        Checks that every active name is present and inside the space, that the conv blocks do not shrink
        the spectrum to nothing and, when given, that the model has at most ``max_params`` parameters.
        """
        if not isinstance(flat, dict):
            return [f"trial config: expected a mapping, got {type(flat).__name__}"]
        problems = []
        for count in ("n_conv_blocks", "n_fc_blocks"):
            if count not in flat:
                problems.append(f"{count}: missing")
            elif not self.params[count].contains(flat[count]):
                problems.append(f"{count}={flat[count]!r} is outside the space {self.params[count].to_dict()}")
        if problems:
            return problems
        seen = self._walk(lambda name, param: flat.get(name, _MISSING))
        for name, value in seen.items():
            if value is _MISSING:
                problems.append(f"{name}: missing")
            elif not self.params[name].contains(value):
                problems.append(f"{name}={value!r} is outside the space {self.params[name].to_dict()}")
        if problems:
            return problems
        cnn, train = self.to_config(flat)
        problems = config_problems(cnn, n_bands) + train.problems()
        if not problems and max_params is not None and parameter_count(cnn, n_bands) > max_params:
            problems.append(f"{parameter_count(cnn, n_bands)} parameters, more than max_params={max_params}")
        return problems

    def to_config(self, flat: dict, *, seed: int = 0) -> tuple[CNNConfig, TrainConfig]:
        """The :class:`CNNConfig` and :class:`TrainConfig` of trial ``flat`` (inactive names ignored)."""
        flat = self.active(flat)
        conv = []
        for i in range(flat["n_conv_blocks"]):
            g = {k: flat.get(f"conv{i}_{k}") for k in CONV_KEYS}
            conv.append(
                ConvBlock(
                    filters=g["filters"],
                    kernel_size=g["kernel_size"],
                    stride=g["stride"],
                    padding=g["padding"],
                    activation=g["activation"],
                    batch_norm=g["batch_norm"],
                    pooling=None if g["pooling"] == "none" else g["pooling"],
                    pool_size=g["pool_size"] if g["pool_size"] is not None else 2,
                    dropout=float(g["dropout_rate"]) if g["dropout"] else 0.0,
                )
            )
        fc = []
        for i in range(flat["n_fc_blocks"]):
            g = {k: flat.get(f"fc{i}_{k}") for k in FC_KEYS}
            fc.append(
                FCBlock(
                    nodes=g["nodes"],
                    activation=g["activation"],
                    batch_norm=g["batch_norm"],
                    dropout=float(g["dropout_rate"]) if g["dropout"] else 0.0,
                )
            )
        train = TrainConfig(**{k: flat[k] for k in TRAIN_KEYS}, seed=seed)
        return CNNConfig(conv, fc, flat.get("scaling", "standard")), train

    @staticmethod
    def from_config(cnn: CNNConfig, train: TrainConfig, preprocessing=None) -> dict:
        """The flat trial dict of a config (inverse of :meth:`to_config`; ``train.seed`` is not a name)."""
        flat = {"n_conv_blocks": len(cnn.conv_blocks)}
        for i, b in enumerate(cnn.conv_blocks):
            flat.update(
                {
                    f"conv{i}_filters": b.filters,
                    f"conv{i}_kernel_size": b.kernel_size,
                    f"conv{i}_stride": b.stride,
                    f"conv{i}_padding": b.padding,
                    f"conv{i}_activation": b.activation,
                    f"conv{i}_batch_norm": b.batch_norm,
                    f"conv{i}_pooling": b.pooling or "none",
                    f"conv{i}_dropout": b.dropout > 0,
                }
            )
            if b.pooling:
                flat[f"conv{i}_pool_size"] = b.pool_size
            if b.dropout > 0:
                flat[f"conv{i}_dropout_rate"] = b.dropout
        flat["n_fc_blocks"] = len(cnn.fc_blocks)
        for i, b in enumerate(cnn.fc_blocks):
            flat.update(
                {
                    f"fc{i}_nodes": b.nodes,
                    f"fc{i}_activation": b.activation,
                    f"fc{i}_batch_norm": b.batch_norm,
                    f"fc{i}_dropout": b.dropout > 0,
                }
            )
            if b.dropout > 0:
                flat[f"fc{i}_dropout_rate"] = b.dropout
        flat.update({k: getattr(train, k) for k in TRAIN_KEYS})
        flat["scaling"] = cnn.scaling
        if preprocessing is not None:
            flat["preprocessing"] = preprocessing
        return flat

    def to_dict(self) -> dict:
        """JSON-serialisable form; :meth:`from_dict` reads it back."""
        return {name: param.to_dict() for name, param in self.params.items()}

    @classmethod
    def from_dict(cls, data: dict) -> SearchSpace:
        if not isinstance(data, dict):
            raise UserInputError(f"search space: expected a mapping of names to parameters, got {type(data).__name__}")
        return cls({name: param_from_dict(p, name) for name, p in data.items()})


_MISSING = object()


def _lookup(flat, name):
    if name not in flat:
        raise UserInputError(f"trial config: missing {name!r}")
    return flat[name]


def _plain(value):
    """numpy scalars -> Python scalars, so a trial dict is JSON-serialisable."""
    return value.item() if isinstance(value, np.generic) else value


DEFAULTS: dict[str, Param] = {
    "n_conv_blocks": Int(0, 4),
    "n_fc_blocks": Int(0, 5),
    "filters": Int(4, 256, log=True),
    "kernel_size": Int(2, 16),
    "stride": Int(1, 8),
    "padding": Categorical(PADDINGS),
    "activation": Categorical(ACTIVATIONS),
    "batch_norm": Categorical((False, True)),
    "pooling": Categorical(("none", "max", "avg")),
    "pool_size": Int(2, 4),
    "dropout": Categorical((False, True)),
    "dropout_rate": Float(0.0, 0.5),
    "nodes": Int(8, 1024, log=True),
    "lr": Float(1e-5, 1e-2, log=True),
    "batch_size": Categorical((8, 16, 32, 64, 128, 256)),
    "optimizer": Categorical(OPTIMIZERS),
    "weight_decay": Float(0.0, 1e-2),
    "max_epochs": Int(20, 500),
    "patience": Int(5, 50),
    "scaling": Categorical(("standard",)),
}
"""Default ranges; they contain every architecture of the paper's Tables 2 and 4. Per-block entries
(``filters`` ... ``dropout_rate``, ``nodes``) apply to every block; ``activation``, ``batch_norm``,
``dropout`` and ``dropout_rate`` to Conv- and FC-blocks alike."""


DRAW_MAX_PARAMS = 5_000_000
"""A search's random draws (after its starters) with more parameters are drawn again. The default space can draw
networks of tens of millions of parameters; on 30 labelled samples one of 21.8 million (201 filters into a
546-node layer) trained for over 24 min holding 10 GB before it was stopped, on UL.120 and SL.125 alike, while
none of the other 47 draws took more than 8.5 min (benchmarks/README.md, "Budgets")."""


def default_space(
    overrides: dict[str, Param] | None = None,
    *,
    preprocessing: list[str] | None = None,
) -> SearchSpace:
    """The default search space, with optional overrides.

    Parameters
    ----------
    overrides : dict, optional
        Replacement parameters, by per-block key (``"filters"``: every conv block; ``"conv_activation"`` /
        ``"fc_activation"``: only conv / FC blocks), by exact flat name (``"conv0_filters"``), or by training
        / block-count name (``"lr"``, ``"n_conv_blocks"``). Block counts may go beyond the defaults.
    preprocessing : list of str, optional
        Choices for a ``preprocessing`` name (passed through to the caller).

    Raises
    ------
    UserInputError
        Unknown override name, empty or contradictory ranges.
    """
    overrides = dict(overrides or {})
    shared = {k: overrides.pop(k, v) for k, v in DEFAULTS.items()}
    params = {"n_conv_blocks": shared["n_conv_blocks"], "n_fc_blocks": shared["n_fc_blocks"]}
    for name in (*TRAIN_KEYS, "scaling"):
        params[name] = shared[name]
    for count, prefix, keys in (("n_conv_blocks", "conv", CONV_KEYS), ("n_fc_blocks", "fc", FC_KEYS)):
        problems = SearchSpace._value_problems(count, params[count])
        if problems:
            raise UserInputError(f"search space: {count}: {problems[0]}")
        n = int(params[count].high if isinstance(params[count], Int) else max(params[count].choices))
        for key in keys:
            per_kind = overrides.pop(f"{prefix}_{key}", None)
            for i in range(n):
                params[f"{prefix}{i}_{key}"] = per_kind or shared[key]
    for name, param in overrides.items():
        if name not in params:
            raise UserInputError(
                f"search space: unknown parameter {name!r}; expected a name of {sorted(DEFAULTS)}, "
                "conv_<key>/fc_<key>, or a flat name such as conv0_filters"
            )
        params[name] = param
    if preprocessing is not None:
        params["preprocessing"] = Categorical(tuple(preprocessing))
    return SearchSpace(params)


def _starter(conv: list[dict], fc: list[dict], **train) -> dict:
    """A flat trial dict from block settings (defaults: no batch norm, pooling or dropout) and training settings."""
    from dtl_dist.nn.builder import ConvBlock, FCBlock

    cnn = CNNConfig([ConvBlock(**c) for c in conv], [FCBlock(**f) for f in fc])
    train = {"lr": 1e-3, "batch_size": 8, "optimizer": "adam", "weight_decay": 0.0, "max_epochs": 300,
             "patience": 30, **train}
    return SearchSpace.from_config(cnn, TrainConfig(**train))


SMALL_DATA_STARTERS = (
    _starter([{"filters": 32, "kernel_size": 5, "stride": 2, "activation": "elu"}], [{"nodes": 16, "activation": "elu"}]),
    _starter([], [{"nodes": 32}], lr=3e-3, weight_decay=1e-3),
    _starter([{"filters": 16, "kernel_size": 9, "stride": 3}], [{"nodes": 32}], lr=3e-3, weight_decay=1e-3),
    _starter([{"filters": 8, "kernel_size": 7, "stride": 2}], [], lr=3e-3, weight_decay=1e-3),
)
"""Small 1D-CNNs (with the default input and SOC scaling) that matched or beat PLS on 30 labelled samples of
the LimeSoDa sites UL.120, SL.125 and CV.98 (benchmarks/README.md, "bench_small_data"); a study's search
tries them first."""
