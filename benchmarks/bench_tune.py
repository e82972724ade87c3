"""bench_tune: complete 10-fold 1D-CNN trials per hour (sequential vs vectorised folds) and samples/s of
streamed library training.

Trials: a k + n = 130 sample, 211-band localised-like set from real data (100 geeves_nsw samples + 30 CV.98
samples, absorbance log10(1/R) on 400-2500 nm every 10 nm, SNV): the paper's Table 4 DTL-I_g China architecture
with TrainConfig defaults (Adam, lr 1e-3, batch 32, up to 200
epochs, patience 20) and configs drawn from the default search space with their sampled training settings; one
torch thread per trial; trials/hour counts 2 trials running side by side on the 2 cores.

Streaming: one epoch of :func:`dtl_dist.nn.stream.fit_library` over a 50,000-sample synthetic library store
(batch 256), a small 1D-CNN, 2 torch threads.

Usage: python benchmarks/bench_tune.py [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dtl_dist.nn import paper_architectures as paper
from dtl_dist.nn.builder import CNNConfig, ConvBlock, FCBlock, parameter_count
from dtl_dist.nn.space import default_space
from dtl_dist.nn.trainer import TrainConfig, cross_validate
from dtl_dist.spectra.grid import make_grid, resample
from dtl_dist.spectra.preprocess import SNV

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def localised_set() -> tuple[np.ndarray, np.ndarray]:
    grid = make_grid()
    geeves = np.load(DATA / "geeves_nsw" / "datsoilspc.npz")
    cv98 = np.load(DATA / "limesoda" / "CV_98.npz")
    rng = np.random.default_rng(0)
    g = rng.choice(len(geeves["y"]), 100, replace=False)
    c = rng.choice(len(cv98["y"]), 30, replace=False)
    a = np.log10(1 / resample(geeves["X"][g].astype(np.float64), geeves["wavelengths"], grid))
    b = np.log10(100 / resample(cv98["X"][c].astype(np.float64), cv98["wavelengths"], grid))
    X = SNV().fit_transform(np.vstack([a, b]))
    y = np.concatenate([geeves["y"][g], cv98["y"][c]]).astype(np.float64)
    return X, y


def bench_trials(quick: bool, n_sampled: int) -> list[tuple]:
    """Paper's DTL-I_g China architecture with TrainConfig defaults, then configs drawn from the default space
    (architecture and training settings as the search would sample them, seed 0)."""
    torch.set_num_threads(1)
    X, y = localised_set()
    space = default_space()
    rng = np.random.default_rng(0)
    cases = [("Table 4 DTL-I_g China", paper.DTL_IG_CHINA, TrainConfig())]
    while len(cases) < 1 + n_sampled:
        flat = space.sample(rng)
        if not space.validate(flat, X.shape[1]):
            cnn, train = space.to_config(flat)
            cases.append((f"sampled #{len(cases)}", cnn, train))
    rows = []
    for name, config, train in cases:
        if quick:
            train = TrainConfig(**{**train.to_dict(), "max_epochs": min(train.max_epochs, 20)})
        seconds = {}
        for mode in ("sequential", "vectorised"):
            start = time.perf_counter()
            cv = cross_validate(X, y, config, train, folds=10, mode=mode)
            seconds[mode] = time.perf_counter() - start
        rows.append((name, parameter_count(config, X.shape[1]), int(cv.epochs.mean()), cv.mean_rmse,
                     seconds["sequential"], seconds["vectorised"]))
    return rows


def bench_stream(quick: bool) -> tuple[int, float]:
    from dtl_dist.library.synthetic import write_library
    from dtl_dist.nn.stream import fit_library

    torch.set_num_threads(2)
    n = 5_000 if quick else 50_000
    config = CNNConfig([ConvBlock(16, 7, stride=3), ConvBlock(32, 5, stride=2)], [FCBlock(64)])
    with tempfile.TemporaryDirectory() as tmp:
        library = write_library(Path(tmp) / "lib.zarr", n, seed=0)
        fit = fit_library(library, config, TrainConfig(batch_size=256, max_epochs=1))
    return n, fit.samples_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="at most 20 epochs, 5,000-sample library")
    parser.add_argument("--sampled", type=int, default=4, help="configs drawn from the default space")
    args = parser.parse_args()
    print("| config | parameters | epochs (mean) | CV RMSE | sequential s | vectorised s | trials/h seq | trials/h vec |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    total = {"seq": 0.0, "vec": 0.0}
    rows = bench_trials(args.quick, args.sampled)
    for name, params, epochs, rmse, seq, vec in rows:
        total["seq"] += seq
        total["vec"] += vec
        print(f"| {name} | {params:,} | {epochs} | {rmse:.3f} | {seq:.1f} | {vec:.1f} | {2 * 3600 / seq:.0f} "
              f"| {2 * 3600 / vec:.0f} |", flush=True)
    n = len(rows)
    print(f"| all {n} | | | | {total['seq']:.1f} | {total['vec']:.1f} | {2 * 3600 * n / total['seq']:.0f} "
          f"| {2 * 3600 * n / total['vec']:.0f} |")
    n, rate = bench_stream(args.quick)
    print(f"\nstreamed library training: {n:,} samples, {rate:,.0f} samples/s")


if __name__ == "__main__":
    main()
