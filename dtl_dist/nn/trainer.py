"""Train 1D-CNNs with early stopping and 10-fold cross-validation (paper section 2.3.1).

One trial is one architecture + training config trained on each of the k train-validation folds; each
fold model stops early on its validation fold and keeps its best weights, the trial's score is the mean
of the k fold RMSEs, and the k fold models form an ensemble (:class:`FoldEnsemble`). The same folds
serve every trial (:func:`~dtl_dist.nn.folds.kfold_assignment`).

Two ways to train the folds give the same models (to float rounding, see below): ``mode="sequential"``
trains fold after fold as :func:`fit_model` does; ``mode="vectorised"`` trains all folds in one
forward/backward pass per step (:class:`~dtl_dist.nn.stacked.FoldStack`), which saves per-step overhead and
is faster for small models; ``mode="auto"`` (default) picks by model size
(:data:`AUTO_VECTORISED_MAX_PARAMS`). The two modes sum in different orders, so weights differ by float
rounding after each step; with batch norm and Adam such differences grow over many epochs (training is
chaotic), so fold RMSEs agree closely only over the first epochs.
Every fold has its own seed, derived from ``TrainConfig.seed`` and the fold number, which fixes its
initial weights and its ``torch.Generator`` for shuffling and dropout masks; nothing reads the global RNG.

:func:`fit_model` trains one model on a given train (and optional validation) split, from random or
given initial weights with the first ``frozen_blocks`` blocks fixed: the building block of transferring
representations (section 2.3.3).

References
----------
Shen Z. et al. (2022) Deep transfer learning of global spectra for local soil carbon monitoring,
sections 2.3.1 and 2.3.3. Prechelt L. (1998) Early stopping - but when?
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import numpy as np
import torch

from dtl_dist.devices import resolve_device
from dtl_dist.errors import UserInputError
from dtl_dist.nn.builder import CNN, CNNConfig, build_cnn, check_config, parameter_count, set_generator, set_scaling
from dtl_dist.nn.folds import check_assignment, kfold_assignment
from dtl_dist.nn.stacked import FoldStack

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SGD_MOMENTUM = 0.9
"""Momentum of the ``"sgd"`` optimiser."""

MODES = ("auto", "vectorised", "sequential")
AUTO_VECTORISED_MAX_PARAMS = 250_000
"""``mode="auto"`` trains the folds vectorised up to this many parameters per model, sequentially above:
on a 2-core CPU (130 x 211, 10 folds) vectorised was 2.1x faster for 7k parameters, 1.2x for 142k,
0.95x for 537k and 0.6x for 3.5M (benchmarks/README.md, "bench_tune (fold training)")."""
_EVAL_ROWS = 4096

EpochCallback = Callable[[int, int, float, float], None]
"""``on_epoch(fold, epoch, train_loss, val_loss)``: called after every epoch of every fold (MSE losses;
``fold`` is 0 for :func:`fit_model`, ``val_loss`` NaN without validation data). Raise to abort."""


@dataclass
class TrainConfig:
    """How a 1D-CNN is trained.

    Parameters
    ----------
    lr : float
        Learning rate.
    batch_size : int
        Mini-batch size; a last batch of one sample is merged into the previous batch.
    optimizer : {"adam", "adamw", "sgd", "rmsprop"}
        ``"sgd"`` uses momentum :data:`SGD_MOMENTUM`; the others use torch's defaults.
    weight_decay : float
        L2 penalty (decoupled for ``"adamw"``).
    max_epochs : int
        Upper bound on epochs.
    patience : int
        Early stopping: stop after this many epochs without a lower validation loss.
    seed : int
        Seed of initial weights, shuffling and dropout (per fold, see :func:`fold_seed`).
    """

    lr: float = 1e-3
    batch_size: int = 32
    optimizer: str = "adam"
    weight_decay: float = 0.0
    max_epochs: int = 200
    patience: int = 20
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - names:
            raise UserInputError(f"train config: expected a mapping with keys among {sorted(names)}, got {data!r:.200}")
        return cls(**data)

    def problems(self) -> list[str]:
        """Reasons why this config cannot train (empty list: it can)."""

        def is_int(v, low):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low

        out = []
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            out.append(f"lr={self.lr!r}, expected a number > 0")
        if not is_int(self.batch_size, 1):
            out.append(f"batch_size={self.batch_size!r}, expected an integer >= 1")
        if self.optimizer not in OPTIMIZERS:
            out.append(f"optimizer={self.optimizer!r}, expected one of {OPTIMIZERS}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            out.append(f"weight_decay={self.weight_decay!r}, expected a number >= 0")
        if not is_int(self.max_epochs, 1):
            out.append(f"max_epochs={self.max_epochs!r}, expected an integer >= 1")
        if not is_int(self.patience, 1):
            out.append(f"patience={self.patience!r}, expected an integer >= 1")
        if not is_int(self.seed, 0):
            out.append(f"seed={self.seed!r}, expected an integer >= 0")
        return out


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    """The torch optimiser named by ``config.optimizer`` over ``params``."""
    kwargs = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.optimizer == "adam":
        return torch.optim.Adam(params, **kwargs)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, momentum=SGD_MOMENTUM, **kwargs)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, **kwargs)
    raise UserInputError(f"optimizer={config.optimizer!r}, expected one of {OPTIMIZERS}")


def fold_seed(seed: int, fold: int) -> int:
    """Seed of fold ``fold`` of a cross-validation run with ``TrainConfig.seed == seed``."""
    return int(np.random.SeedSequence([seed, fold]).generate_state(1)[0])


def check_xy(X, y, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Spectra and targets as float32 after checking shapes and that every value is finite."""
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] == 0:
        raise UserInputError(f"{what} spectra: expected a 2-D array (samples x bands), got shape {X.shape}")
    if y.shape != (X.shape[0],):
        raise UserInputError(f"{what} targets: expected {X.shape[0]} values (one per spectrum), got shape {y.shape}")
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise UserInputError(f"{what} targets: {bad.size} missing (NaN) or non-finite value(s), first at row {bad[0]}")
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if bad.size:
        raise UserInputError(
            f"{what} spectra: {bad.size} row(s) with missing or non-finite values, first at row {bad[0]}"
        )
    return X, y


def _check_configs(cnn_config: CNNConfig, train_config: TrainConfig, n_bands: int) -> None:
    check_config(cnn_config, n_bands)
    problems = train_config.problems() if isinstance(train_config, TrainConfig) else ["expected a TrainConfig"]
    if problems:
        raise UserInputError("invalid train config: " + "; ".join(problems))


def _new_model(cnn_config, n_bands, seed, init_state, frozen_blocks, device, X_train, y_train
               ) -> tuple[CNN, torch.Generator]:
    """A model with seeded (or given) initial weights, its scaling fixed from its training data (a given
    model keeps its input scaling: its fixed front blocks expect it) and its seeded shuffling/dropout
    generator."""
    init_seed, stream_seed = np.random.SeedSequence(seed).generate_state(2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(init_seed))
        model = build_cnn(cnn_config, n_bands)
    if init_state is not None:
        try:
            model.load_state_dict(init_state)
        except RuntimeError as exc:
            raise UserInputError(f"initial weights do not match the 1D-CNN config: {exc}") from None
    set_scaling(model, X_train if init_state is None else None, y_train)
    if not isinstance(frozen_blocks, int) or not 0 <= frozen_blocks < len(model.blocks):
        raise UserInputError(
            f"frozen_blocks={frozen_blocks!r}: expected 0..{len(model.blocks) - 1} (the output block always trains)"
        )
    model.freeze(frozen_blocks)
    model.to(device)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(stream_seed))
    set_generator(model, generator)
    return model, generator


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split a shuffled index vector into mini-batches; a last batch of one joins the one before."""
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2:] = [torch.cat(chunks[-2:])]
    return chunks


def _state(model: torch.nn.Module) -> dict:
    """A copy of the model's weights on the CPU (a GPU task's results load on a CPU-only driver)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class EarlyStopping:
    """Early stopping of one model (Prechelt 1998): keep the weights of the lowest validation loss and stop
    after ``patience`` epochs without a lower one, or as soon as the training loss is not finite. Without
    validation data (``val_loss`` NaN every epoch) the model trains every epoch and keeps its last weights."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = math.inf
        self.best_epoch = -1
        self.state = None
        self.wait = 0
        self.epochs = 0
        self.train_loss: list[float] = []
        self.val_loss: list[float] = []

    def update(self, epoch: int, train_loss: float, val_loss: float, snapshot: Callable[[], dict]) -> bool:
        """Record an epoch (``snapshot()`` returns the current weights); True when training should stop."""
        self.epochs = epoch + 1
        self.train_loss.append(train_loss)
        self.val_loss.append(val_loss)
        if not math.isfinite(train_loss):
            return True
        if math.isnan(val_loss):
            return False
        if val_loss < self.best:
            self.best, self.best_epoch, self.state, self.wait = val_loss, epoch, snapshot(), 0
            return False
        self.wait += 1
        return self.wait >= self.patience


def run_epochs(n_models: int, config: TrainConfig, train_epoch, validate, snapshot, restore,
               on_epoch: EpochCallback | None = None) -> list[EarlyStopping]:
    """The one epoch loop of every 1D-CNN training path (fold models, a single model, a streamed library model).

    Parameters
    ----------
    n_models : models trained together (each stops on its own).
    config : ``max_epochs`` and ``patience``.
    train_epoch : ``train_epoch(active, epoch) -> {model: mean training loss}`` over the models still training.
    validate : ``validate(active) -> {model: validation loss}`` (NaN without validation data).
    snapshot : ``snapshot(model) -> state_dict`` copy of a model's current weights.
    restore : ``restore(model, state_dict)`` loads the kept weights into a model at the end.
    on_epoch : ``on_epoch(model, epoch, train_loss, val_loss)`` after every epoch of every active model.

    Returns
    -------
    list of EarlyStopping, one per model, with its kept weights in ``state`` (restored into the model).
    """
    stoppers = [EarlyStopping(config.patience) for _ in range(n_models)]
    active = list(range(n_models))
    for epoch in range(config.max_epochs):
        train_loss = train_epoch(active, epoch)
        val_loss = validate(active)
        still = []
        for i in active:
            if on_epoch is not None:
                on_epoch(i, epoch, train_loss[i], val_loss[i])
            if not stoppers[i].update(epoch, train_loss[i], val_loss[i], lambda i=i: snapshot(i)):
                still.append(i)
        active = still
        if not active:
            break
    for i, stopper in enumerate(stoppers):
        if stopper.state is None:  # no validation, or it never improved: the last weights
            stopper.state = snapshot(i)
        else:
            restore(i, stopper.state)
    return stoppers


@torch.no_grad()
def _predict(model: torch.nn.Module, X: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(X[i : i + _EVAL_ROWS]) for i in range(0, len(X), _EVAL_ROWS)])


def _as_tensor(X: np.ndarray, device) -> torch.Tensor:
    return torch.as_tensor(X, device=device).unsqueeze(1)


@dataclass
class FitResult:
    """One trained 1D-CNN (:func:`fit_model`).

    Attributes
    ----------
    model : CNN
        The model with its best weights (lowest validation loss; last epoch without validation), in eval mode.
    state_dict : dict
        Its weights.
    epochs : int
        Epochs trained.
    best_epoch : int
        Epoch (0-based) of the kept weights.
    val_rmse : float
        Validation RMSE of the kept weights (NaN without validation data).
    train_loss, val_loss : list of float
        MSE per epoch (``val_loss`` NaN without validation data).
    """

    model: CNN
    state_dict: dict
    epochs: int
    best_epoch: int
    val_rmse: float
    train_loss: list[float]
    val_loss: list[float]


def fit_model(
    X_train,
    y_train,
    cnn_config: CNNConfig,
    train_config: TrainConfig,
    *,
    validation: tuple | None = None,
    seed: int | None = None,
    init_state: dict | None = None,
    frozen_blocks: int = 0,
    device: str | torch.device | None = None,
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Train one 1D-CNN, with early stopping on ``validation = (X_val, y_val)`` when given.

    Parameters
    ----------
    X_train : array (n, n_bands)
    y_train : array (n,)
    cnn_config, train_config
        Architecture and training settings.
    validation : (X_val, y_val), optional
        Early stopping data; without it the model trains ``max_epochs`` epochs and keeps the last weights.
    seed : int, optional
        Seed of initial weights, shuffling and dropout (default ``train_config.seed``).
    init_state : dict, optional
        Initial weights (a ``state_dict`` of the same architecture), e.g. a library 1D-CNN to transfer.
    frozen_blocks : int
        Number of leading blocks fixed during training (:meth:`CNN.freeze`): transfer of representations.
    device : str or torch.device, optional
        Default: the task's (:func:`dtl_dist.devices.task_device`: ``cuda`` when the engine gave it a GPU).
    on_epoch : callable, optional
        ``on_epoch(0, epoch, train_loss, val_loss)`` after each epoch.

    Returns
    -------
    FitResult

    References
    ----------
    Shen et al. (2022), sections 2.3.1 (early stopping) and 2.3.3 (fixing front layers).
    """
    X_train, y_train = check_xy(X_train, y_train, "training")
    n_bands = X_train.shape[1]
    _check_configs(cnn_config, train_config, n_bands)
    device = resolve_device(device)
    if validation is not None:
        X_val, y_val = check_xy(*validation, "validation")
        if X_val.shape[1] != n_bands:
            raise UserInputError(f"validation spectra have {X_val.shape[1]} bands, training spectra {n_bands}")
        validation = (_as_tensor(X_val, device), torch.as_tensor(y_val, device=device))
    model, generator = _new_model(
        cnn_config, n_bands, train_config.seed if seed is None else seed, init_state, frozen_blocks, device,
        X_train, y_train,
    )
    Xt, yt = _as_tensor(X_train, device), torch.as_tensor(y_train, device=device)
    stopper = _train_one(model, generator, Xt, yt, validation, train_config, on_epoch)
    val_rmse = math.sqrt(stopper.best) if math.isfinite(stopper.best) else math.nan
    return FitResult(
        model, stopper.state, stopper.epochs, stopper.best_epoch, val_rmse, stopper.train_loss, stopper.val_loss
    )


def _train_one(model, generator, Xt, yt, validation, train_config, report) -> EarlyStopping:
    """Train one model in place (:func:`run_epochs`); leave it with its kept weights in eval mode."""
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], train_config)

    def train_epoch(active, epoch):
        model.train()
        order = torch.randperm(len(Xt), generator=generator, device=generator.device)
        total = 0.0
        for batch in _batches(order, train_config.batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.mean((model(Xt[batch]) - yt[batch]) ** 2)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        return {0: total / len(Xt)}

    def validate(active):
        model.eval()
        if validation is None:
            return {0: math.nan}
        return {0: torch.mean((_predict(model, validation[0]) - validation[1]) ** 2).item()}

    stopper, = run_epochs(1, train_config, train_epoch, validate, lambda i: _state(model),
                          lambda i, state: model.load_state_dict(state), report)
    model.eval()
    return stopper


class FoldEnsemble:
    """The k fold models of a cross-validated trial; predicts the mean of their predictions.

    Parameters
    ----------
    models : list of torch.nn.Module
        Models mapping ``(batch, 1, n_bands)`` to ``(batch,)``.

    Examples
    --------
    >>> ensemble = FoldEnsemble.from_states(cnn_config, 211, result.states)  # doctest: +SKIP
    >>> ensemble.predict(X_test)  # doctest: +SKIP
    """

    def __init__(self, models: list[torch.nn.Module]):
        self.models = list(models)

    @classmethod
    def from_states(cls, cnn_config: CNNConfig, n_bands: int, states: list[dict]) -> FoldEnsemble:
        models = []
        for state in states:
            model = build_cnn(cnn_config, n_bands)
            model.load_state_dict(state)
            models.append(model.eval())
        return cls(models)

    def predict_each(self, X) -> np.ndarray:
        """Predictions of every fold model, shape ``(k, n)``: the paper picks the transfer base model by them."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise UserInputError(f"spectra: expected a 2-D array (samples x bands), got shape {X.shape}")
        out = []
        for model in self.models:
            model.eval()
            device = next(model.parameters()).device
            out.append(_predict(model, _as_tensor(X, device)).cpu().numpy())
        return np.stack(out)

    def predict(self, X) -> np.ndarray:
        """Mean prediction of the fold models, shape ``(n,)``."""
        return self.predict_each(X).mean(axis=0)


@dataclass
class CVResult:
    """A cross-validated trial (:func:`cross_validate`).

    Attributes
    ----------
    fold_rmse : ndarray (k,)
        Validation RMSE of each fold model (its best epoch); NaN if a fold diverged from the start.
    mean_rmse, std_rmse : float
        Mean and standard deviation (ddof=0) of ``fold_rmse``: ``mean_rmse`` is the trial's score.
    epochs, best_epochs : ndarray (k,)
        Epochs trained and 0-based epoch of the kept weights, per fold.
    states : list of dict
        Best weights (``state_dict``) of each fold model.
    train_loss, val_loss : list of list of float
        MSE per epoch, per fold.
    folds : ndarray (n,)
        Fold id of each sample.
    cnn_config, train_config, n_bands
        What was trained.
    """

    fold_rmse: np.ndarray
    mean_rmse: float
    std_rmse: float
    epochs: np.ndarray
    best_epochs: np.ndarray
    states: list[dict]
    train_loss: list[list[float]]
    val_loss: list[list[float]]
    folds: np.ndarray
    cnn_config: CNNConfig
    train_config: TrainConfig
    n_bands: int = field(default=0)

    def ensemble(self) -> FoldEnsemble:
        """The k fold models as a :class:`FoldEnsemble`."""
        return FoldEnsemble.from_states(self.cnn_config, self.n_bands, self.states)


def cross_validate(
    X,
    y,
    cnn_config: CNNConfig,
    train_config: TrainConfig,
    folds=10,
    *,
    split_seed: int = 0,
    mode: str = "auto",
    init_state: dict | None = None,
    frozen_blocks: int = 0,
    device: str | torch.device | None = None,
    on_epoch: EpochCallback | None = None,
) -> CVResult:
    """Train one 1D-CNN config on each train-validation fold with early stopping (one trial).

    Parameters
    ----------
    X : array (n, n_bands)
    y : array (n,)
    cnn_config, train_config
        The trial's architecture and training settings.
    folds : int or array (n,)
        Number of random folds (split by ``kfold_assignment(n, folds, split_seed)``) or the fold id of
        each sample; pass the same ids to every trial, and to the transfer runs that reuse the folds.
    split_seed : int
        Seed of the split when ``folds`` is an int.
    mode : {"auto", "vectorised", "sequential"}
        Train the folds together (one batched forward pass) or one after another (same models); ``"auto"``:
        vectorised for models of at most :data:`AUTO_VECTORISED_MAX_PARAMS` parameters.
    init_state, frozen_blocks
        Initial weights and number of fixed leading blocks for every fold model (transfer, section 2.3.3).
    device : str or torch.device, optional
        Default: the task's (see :func:`fit_model`).
    on_epoch : callable, optional
        ``on_epoch(fold, epoch, train_loss, val_loss)`` after each epoch of each fold.

    Returns
    -------
    CVResult

    References
    ----------
    Shen et al. (2022), section 2.3.1: "We used 10-fold cross-validation to develop the 1D-CNNs and root
    mean squared error (RMSE) to guide model selection."
    """
    X, y = check_xy(X, y, "training")
    fold_ids = kfold_assignment(len(y), folds, split_seed) if np.isscalar(folds) else check_assignment(folds, len(y))
    k = int(fold_ids.max()) + 1
    splits = [Split(np.flatnonzero(fold_ids != f), np.flatnonzero(fold_ids == f), init_state) for f in range(k)]
    stoppers = train_splits(X, y, splits, cnn_config, train_config, [fold_seed(train_config.seed, f) for f in range(k)],
                            frozen_blocks=frozen_blocks, mode=mode, device=device, on_epoch=on_epoch)
    fold_rmse = np.array([math.sqrt(s.best) if math.isfinite(s.best) else math.nan for s in stoppers])
    return CVResult(
        fold_rmse=fold_rmse,
        mean_rmse=float(np.mean(fold_rmse)),
        std_rmse=float(np.std(fold_rmse)),
        epochs=np.array([s.epochs for s in stoppers]),
        best_epochs=np.array([s.best_epoch for s in stoppers]),
        states=[s.state for s in stoppers],
        train_loss=[s.train_loss for s in stoppers],
        val_loss=[s.val_loss for s in stoppers],
        folds=fold_ids,
        cnn_config=cnn_config,
        train_config=train_config,
        n_bands=X.shape[1],
    )


@dataclass(frozen=True)
class Split:
    """One model to train: its training rows, its validation rows (early stopping) and, for a transfer, its
    initial weights (rows index the ``X`` and ``y`` given to :func:`train_splits`)."""

    train: np.ndarray
    val: np.ndarray
    init_state: dict | None = None


def resolve_mode(mode: str, cnn_config: CNNConfig, n_bands: int) -> str:
    """``"auto"`` -> ``"vectorised"`` up to :data:`AUTO_VECTORISED_MAX_PARAMS` parameters, else ``"sequential"``."""
    if mode not in MODES:
        raise UserInputError(f"mode={mode!r}, expected one of {MODES}")
    if mode != "auto":
        return mode
    return "vectorised" if parameter_count(cnn_config, n_bands) <= AUTO_VECTORISED_MAX_PARAMS else "sequential"


def train_splits(X, y, splits: list[Split], cnn_config: CNNConfig, train_config: TrainConfig, seeds: list[int], *,
                 frozen_blocks: int = 0, mode: str = "auto", device=None,
                 on_epoch: EpochCallback | None = None) -> list[EarlyStopping]:
    """Train one model per split (its own rows, validation, seed and initial weights), each with early stopping
    on its validation rows: the building block of cross-validation (one split per fold) and of the nested
    designs of a study (one split per inner fold of every outer fold, :mod:`dtl_dist.nn.nested`).

    ``mode`` trains the models together (``"vectorised"``, :mod:`dtl_dist.nn.stacked`) or one after another
    (``"sequential"``); ``on_epoch(model, epoch, train_loss, val_loss)``. ``device`` (default: the task's,
    :func:`dtl_dist.devices.task_device`) holds the models, data, row indices and generators. Returns one
    :class:`EarlyStopping` per split holding the kept weights (``state``, on the CPU) and the loss curves.
    """
    X, y = np.asarray(X, dtype=np.float32), np.asarray(y, dtype=np.float32)
    n_bands = X.shape[1]
    _check_configs(cnn_config, train_config, n_bands)
    device = resolve_device(device)
    mode = resolve_mode(mode, cnn_config, n_bands)
    models, generators = zip(*(_new_model(cnn_config, n_bands, seed, split.init_state, frozen_blocks, device,
                                          X[split.train], y[split.train]) for split, seed in zip(splits, seeds)))
    Xt, yt = _as_tensor(X, device), torch.as_tensor(y, device=device)
    train_rows = [torch.as_tensor(np.asarray(split.train, dtype=np.int64), device=device) for split in splits]
    val_rows = [torch.as_tensor(np.asarray(split.val, dtype=np.int64), device=device) for split in splits]
    if mode == "sequential":
        stoppers = []
        for i, (model, generator) in enumerate(zip(models, generators)):
            report = None if on_epoch is None else (lambda _, *args, i=i: on_epoch(i, *args))
            validation = (Xt[val_rows[i]], yt[val_rows[i]])
            stoppers.append(_train_one(model, generator, Xt[train_rows[i]], yt[train_rows[i]], validation,
                                       train_config, report))
        return stoppers
    return _train_vectorised(models, generators, Xt, yt, train_rows, val_rows, train_config, on_epoch)


def _train_vectorised(models, generators, Xt, yt, train_rows, val_rows, train_config, on_epoch):
    """Train the models together (see :mod:`dtl_dist.nn.stacked`); one stopper per model."""
    k = len(models)
    stack = FoldStack(list(models))
    trainable = [name for name, t in stack.params.items() if t.requires_grad]
    fold_params = [[m.get_parameter(name) for name in trainable] for m in models]
    optimizer = make_optimizer([p for params in fold_params for p in params], train_config)

    def train_epoch(active, epoch):
        for model in models:
            model.train()
        batches = {}
        for f in active:
            order = torch.randperm(len(train_rows[f]), generator=generators[f], device=generators[f].device)
            batches[f] = _batches(train_rows[f][order], train_config.batch_size)
        totals = defaultdict(float)
        for step in range(max(len(b) for b in batches.values())):
            groups = defaultdict(list)  # models whose batch at this step has the same size run together
            for f in active:
                if step < len(batches[f]):
                    groups[len(batches[f][step])].append(f)
            for name in trainable:
                stack.params[name].grad = None
            loss_sum = 0.0
            for size, group in groups.items():
                rows = torch.stack([batches[f][step] for f in group])
                losses = torch.mean((stack.forward(Xt[rows], group) - yt[rows]) ** 2, dim=1)
                loss_sum = loss_sum + losses.sum()
                for f, value in zip(group, losses.tolist()):
                    totals[f] += value * size
            loss_sum.backward()
            stepping = {f for group in groups.values() for f in group}
            for f, params in enumerate(fold_params):
                for name, p in zip(trainable, params):
                    p.grad = stack.params[name].grad[f] if f in stepping else None
            optimizer.step()
        return {f: totals[f] / len(train_rows[f]) for f in active}

    def validate(active):
        for model in models:
            model.eval()
        return _validation_losses(stack, Xt, yt, val_rows, active)

    return run_epochs(k, train_config, train_epoch, validate, lambda f: _state(models[f]),
                      lambda f, state: models[f].load_state_dict(state), on_epoch)


@torch.no_grad()
def _validation_losses(stack, Xt, yt, val_rows, active) -> dict[int, float]:
    """Validation MSE of each active fold, folds with equally large validation sets evaluated together."""
    groups = defaultdict(list)
    for f in active:
        groups[len(val_rows[f])].append(f)
    out = {}
    for size, group in groups.items():
        rows = torch.stack([val_rows[f] for f in group])
        sq = torch.zeros(len(group), device=Xt.device)
        for i in range(0, size, _EVAL_ROWS):
            part = rows[:, i : i + _EVAL_ROWS]
            sq += torch.sum((stack.forward(Xt[part], group) - yt[part]) ** 2, dim=1)
        out.update(zip(group, (sq / size).tolist()))
    return out
