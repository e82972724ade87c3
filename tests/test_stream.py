"""Library-scale training: mini-batches streamed from the Zarr store, data-parallel through the torch_ddp engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from dtl_dist.errors import UserInputError
from dtl_dist.library import SpectralLibrary
from dtl_dist.nn.builder import CNNConfig, ConvBlock, FCBlock, build_cnn
from dtl_dist.nn.stream import LibraryBatches, fit_library
from dtl_dist.nn.trainer import TrainConfig
from dtl_dist.spectra.preprocess import SNV

CONFIG = CNNConfig([ConvBlock(3, 5, stride=2)], [FCBlock(6)])


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.uniform(0.2, 1.2, size=(230, 24))
    soc = X[:, :3].sum(axis=1)
    soc[[7, 100]] = np.nan  # not measured: never streamed
    path = tmp_path_factory.mktemp("stream") / "lib.zarr"
    return SpectralLibrary.create(path, X, np.arange(400.0, 640.0, 10.0), [f"s{i}" for i in range(230)],
                                  targets={"soc": soc}, chunk_rows=50)


def _rows(batches, library):
    """Which library rows a batch holds (spectra are unique), via their SNV spectra."""
    snv = SNV().fit_transform(library.spectra()).astype(np.float32)
    index = {row.tobytes(): i for i, row in enumerate(snv)}
    return [[index[x.numpy().tobytes()] for x in X] for X, _ in batches]


def test_an_epoch_streams_every_measured_row_once_in_a_seeded_order(library):
    stream = LibraryBatches(library, batch_size=19, buffer_chunks=2, seed=3)
    epoch0 = list(stream)
    assert len(epoch0) == len(stream) == 228 // 19
    rows = np.concatenate(_rows(epoch0, library))
    assert sorted(rows) == [i for i in range(230) if i not in (7, 100)]
    soc = library.target("soc")
    np.testing.assert_allclose(np.concatenate([y.numpy() for _, y in epoch0]), soc[rows].astype(np.float32))
    assert _rows(epoch0, library) == _rows(list(stream), library)  # same seed and epoch: same batches
    stream.set_epoch(1)
    assert _rows(list(stream), library) != _rows(epoch0, library)


def test_ranks_split_each_global_batch(library):
    single = _rows(list(LibraryBatches(library, batch_size=20, seed=1)), library)
    ranks = [_rows(list(LibraryBatches(library, batch_size=10, seed=1, rank=r, world_size=2)), library)
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for j, batch in enumerate(single):
        assert ranks[0][j] + ranks[1][j] == batch


def _ddp_worker(rank, world, init_file, path, queue):
    from dtl_dist.engines.torch_ddp import DataParallel

    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    parallel = DataParallel()
    fit = fit_library(SpectralLibrary.open(path), CONFIG, TrainConfig(batch_size=10, max_epochs=2, optimizer="sgd",
                                                                      lr=0.01, seed=5), data_parallel=parallel)
    queue.put((rank, {k: v.numpy() for k, v in fit.state_dict.items()}, fit.train_loss))
    parallel.close()


def test_two_data_parallel_ranks_train_like_one_process_with_the_global_batch(library, tmp_path):
    one = fit_library(library, CONFIG, TrainConfig(batch_size=20, max_epochs=2, optimizer="sgd", lr=0.01, seed=5))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "pg"), str(library.path), queue), nprocs=2,
                       start_method="spawn", join=True)
    results = sorted(queue.get(timeout=60) for _ in range(2))
    for _, state, _ in results:
        for name, value in one.state_dict.items():
            np.testing.assert_allclose(state[name], value.numpy(), rtol=1e-4, atol=1e-6)


def test_training_with_validation_keeps_the_best_weights(library):
    X = SNV().fit_transform(library.spectra()[:40])
    y = library.target("soc")[:40]
    keep = np.isfinite(y)
    fit = fit_library(library, CONFIG, TrainConfig(batch_size=16, max_epochs=6, patience=2, lr=3e-3),
                      validation=(X[keep], y[keep]))
    assert fit.samples == fit.epochs * (228 // 16) * 16 and fit.samples_per_s > 0
    assert len(fit.val_loss) == fit.epochs and fit.train_loss[-1] < fit.train_loss[0]
    # a run whose validation loss rose after its best epoch: the weights kept score that epoch's loss, not the last's
    fit = fit_library(library, CONFIG, TrainConfig(batch_size=16, max_epochs=10, patience=3, lr=0.1),
                      validation=(X[keep], y[keep]))
    best = int(np.argmin(fit.val_loss))
    assert best < fit.epochs - 1 and fit.val_loss[-1] > fit.val_loss[best] * 1.05
    model = build_cnn(CONFIG, X.shape[1])
    model.load_state_dict(fit.state_dict)
    with torch.no_grad():
        kept = model.eval()(torch.as_tensor(X[keep], dtype=torch.float32)).numpy()
    assert np.mean((kept - y[keep]) ** 2) == pytest.approx(fit.val_loss[best], rel=1e-4)
    with pytest.raises(UserInputError, match="fewer than one global batch"):
        LibraryBatches(library, batch_size=500)
