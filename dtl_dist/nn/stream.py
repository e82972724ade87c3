"""Library-scale 1D-CNN training: mini-batches streamed from the Zarr library (paper section 2.3.1).

The global and country 1D-CNNs learn from whole spectral libraries (the paper notes 2-22 days per global
search on one GPU). :class:`LibraryBatches` streams shuffled mini-batches straight from the store, a few
Zarr chunks at a time, so the library never has to fit in memory; :func:`fit_library` trains a CNN on
them with early stopping on an in-memory validation sample.

Data-parallel training over several GPUs (or CPU processes) takes an injected ``data_parallel`` engine
(:class:`dtl_dist.engines.torch_ddp.DataParallel` under ``torchrun``) that gives this process its rank and
world size and wraps the model; every rank then gets its own share of each global batch. With ``W`` ranks of
batch ``b``, rank ``r`` gets rows ``[(jW + r) b, (jW + r + 1) b)`` of the ``j``-th global batch of ``W b``
shuffled rows, so W ranks take exactly the steps one process would take with batch ``W b`` (the engine
averages the gradients).

References
----------
Shen Z. et al. (2022), section 2.3.1 and Table 2 (the global and country 1D-CNNs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import zarr

from dtl_dist.devices import resolve_device
from dtl_dist.errors import UserInputError
from dtl_dist.nn.builder import CNNConfig, build_cnn, set_generator, set_scaling
from dtl_dist.nn.trainer import TrainConfig, make_optimizer, run_epochs
from dtl_dist.spectra.preprocess import SNV


def _chunk_rows(library) -> int:
    return int(zarr.open_array(str(Path(library.path) / "spectra"), mode="r").chunks[0])


class LibraryBatches(torch.utils.data.IterableDataset):
    """Shuffled ``(spectra, targets)`` mini-batches read from a :class:`~dtl_dist.library.SpectralLibrary`.

    Each epoch visits the store chunks in a seeded random order, ``buffer_chunks`` chunks at a time,
    shuffles the rows of the buffer and cuts them into batches; leftover rows carry over to the next
    buffer. Only rows with a measured target are used. Spectra are SNV-transformed on the fly (the store
    holds absorbance, paper section 2.2).

    Parameters
    ----------
    library : SpectralLibrary (or a view of one, e.g. ``lib.by(country="SE")``).
    target : target name.
    rows : optional int array of library rows to use (e.g. the training rows; relative to the view).
    batch_size : rows per batch on each rank.
    buffer_chunks : store chunks read and shuffled together.
    seed : seed of the chunk and row order (combined with the epoch, see :meth:`set_epoch`).
    rank, world_size : this process's share in data-parallel training.
    snv : apply SNV to each spectrum.
    """

    def __init__(self, library, target: str = "soc", *, rows=None, batch_size: int = 256, buffer_chunks: int = 2,
                 seed: int = 0, rank: int = 0, world_size: int = 1, snv: bool = True):
        if batch_size < 1 or buffer_chunks < 1:
            raise UserInputError(f"batch_size={batch_size}, buffer_chunks={buffer_chunks}: expected integers >= 1")
        if not 0 <= rank < world_size:
            raise UserInputError(f"rank {rank} of world size {world_size}: expected 0 <= rank < world size")
        self.library = library
        self.batch_size = batch_size
        self.buffer_chunks = buffer_chunks
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.snv = snv
        self.epoch = 0
        y = library.target(target)
        positions = np.arange(library.n_samples) if rows is None else np.asarray(rows, dtype=np.int64)
        positions = positions[np.isfinite(y[positions])]
        if positions.size < batch_size * world_size:
            raise UserInputError(
                f"{library.path}: {positions.size} samples with a measured {target!r}, fewer than one global batch "
                f"({batch_size} x {world_size} ranks)"
            )
        absolute = positions if library.index is None else library.index[positions]
        chunk = absolute // _chunk_rows(library)
        self._chunks = [positions[chunk == c] for c in np.unique(chunk)]
        self._y = y.astype(np.float32)
        self.n_rows = int(positions.size)

    def set_epoch(self, epoch: int) -> None:
        """Use the row order of ``epoch`` (same seed and epoch -> same batches)."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches per epoch on each rank."""
        return self.n_rows // (self.batch_size * self.world_size)

    def moments(self) -> tuple[tuple, tuple]:
        """``((band means, band sds), (target mean, target sd))`` of every row, in one pass over the chunks:
        the scaling of a model trained on the library (:func:`~dtl_dist.nn.builder.set_scaling`)."""
        count, total, squares = 0, np.zeros(self.library.n_bands), np.zeros(self.library.n_bands)
        for rows in self._chunks:
            X = self._read(np.sort(rows)).astype(np.float64)
            count, total, squares = count + len(X), total + X.sum(0), squares + (X**2).sum(0)
        mean = total / count
        y = self._y[np.concatenate(self._chunks)].astype(np.float64)
        return (mean, np.sqrt(np.maximum(squares / count - mean**2, 0))), (y.mean(), y.std())

    def _read(self, positions: np.ndarray) -> np.ndarray:
        """Spectra of ``positions`` (sorted), SNV-transformed; one Zarr read per chunk."""
        X = self.library.spectra(positions)
        return SNV().fit_transform(X).astype(np.float32) if self.snv else X

    def __iter__(self):
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch]))
        global_batch = self.batch_size * self.world_size
        rows, spectra = np.empty(0, dtype=np.int64), np.empty((0, self.library.n_bands), dtype=np.float32)
        chunk_order = rng.permutation(len(self._chunks))
        remaining = len(self)
        for start in range(0, len(chunk_order), self.buffer_chunks):
            new = np.sort(np.concatenate([self._chunks[c] for c in chunk_order[start:start + self.buffer_chunks]]))
            rows, spectra = np.concatenate([rows, new]), np.concatenate([spectra, self._read(new)])
            order = rng.permutation(rows.size)
            rows, spectra = rows[order], spectra[order]
            usable = (rows.size // global_batch) * global_batch
            for j in range(0, usable, global_batch):
                if remaining == 0:
                    return
                mine = slice(j + self.rank * self.batch_size, j + (self.rank + 1) * self.batch_size)
                yield torch.from_numpy(spectra[mine]), torch.from_numpy(self._y[rows[mine]])
                remaining -= 1
            rows, spectra = rows[usable:], spectra[usable:]


@dataclass
class LibraryFit:
    """Result of :func:`fit_library`.

    Attributes
    ----------
    state_dict : weights with the lowest validation loss (last epoch without validation).
    epochs : epochs trained.
    train_loss, val_loss : MSE per epoch.
    samples : training samples seen (all epochs, this rank).
    seconds : training wall time.
    """

    state_dict: dict
    epochs: int
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else math.nan


class SingleProcess:
    """The default ``data_parallel`` engine: this process alone (rank 0 of 1), the model as it is."""

    rank, world_size = 0, 1

    @staticmethod
    def wrap(model):
        return model


def fit_library(library, cnn_config: CNNConfig, train_config: TrainConfig, *, target: str = "soc", rows=None,
                validation=None, buffer_chunks: int = 2, device: str | None = None, data_parallel=None) -> LibraryFit:
    """Train one 1D-CNN on a spectral library streamed from Zarr (section 2.3.1), data-parallel when an engine
    is given.

    Parameters
    ----------
    library : SpectralLibrary (absorbance on the model's grid).
    cnn_config, train_config : architecture and training settings (``batch_size`` is per rank).
    target : target name.
    rows : training rows (default: all rows with a measured target).
    validation : ``(X_val, y_val)`` SNV-preprocessed, in memory, for early stopping (``patience``).
    buffer_chunks : store chunks shuffled together.
    device : torch device of this rank (default: the task's, :func:`dtl_dist.devices.task_device`).
    data_parallel : an object with ``rank``, ``world_size`` and ``wrap(model)`` (default :class:`SingleProcess`;
        :class:`dtl_dist.engines.torch_ddp.DataParallel` under ``torchrun``).

    Returns
    -------
    LibraryFit (identical on every rank).
    """
    import time

    parallel = data_parallel or SingleProcess()
    device = resolve_device(device)
    batches = LibraryBatches(library, target, rows=rows, batch_size=train_config.batch_size,
                             buffer_chunks=buffer_chunks, seed=train_config.seed, rank=parallel.rank,
                             world_size=parallel.world_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_config.seed)
        model = build_cnn(cnn_config, library.n_bands)
    if model.scaled:
        set_scaling(model, *batches.moments())
    model.to(device)
    generator = torch.Generator(device=device)
    generator.manual_seed(train_config.seed + parallel.rank)
    set_generator(model, generator)
    net = parallel.wrap(model)
    optimizer = make_optimizer(net.parameters(), train_config)
    if validation is not None:
        Xv = torch.as_tensor(np.asarray(validation[0], dtype=np.float32), device=device).unsqueeze(1)
        yv = torch.as_tensor(np.asarray(validation[1], dtype=np.float32), device=device)
    fit = LibraryFit({}, 0)

    def train_epoch(active, epoch):
        batches.set_epoch(epoch)
        net.train()
        total, count = 0.0, 0
        for X, y in batches:
            X, y = X.to(device).unsqueeze(1), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = torch.mean((net(X) - y) ** 2)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
            count += len(y)
        fit.samples += count
        return {0: total / max(count, 1)}

    @torch.no_grad()
    def validate(active):
        net.eval()
        return {0: math.nan if validation is None else torch.mean((model(Xv) - yv) ** 2).item()}

    start = time.perf_counter()
    stopper, = run_epochs(1, train_config, train_epoch, validate,
                          lambda i: {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                          lambda i, state: model.load_state_dict(state))
    fit.seconds = time.perf_counter() - start
    fit.state_dict, fit.epochs = stopper.state, stopper.epochs
    fit.train_loss, fit.val_loss = stopper.train_loss, [v for v in stopper.val_loss if not math.isnan(v)]
    return fit
