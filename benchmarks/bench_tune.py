"""bench_tune: complete 10-fold 1D-CNN trials per hour (sequential vs vectorised folds) and samples/s of
streamed library training.

Trials: a k + n = 130 sample, 211-band (209 without DTL_DATA) localised-like set from real data (100 library
samples + 30 CV.98 samples, absorbance log10(1/R) on 400-2500 nm every 10 nm, SNV; the library samples come
from the Geeves NSW library when DTL_DATA holds it, else from the LimeSoDa sites SC.93, SL.125 and UL.120
resampled from 420 nm): the paper's Table 4 DTL-I_g China architecture with TrainConfig defaults (Adam, lr 1e-3,
batch 32, up to 200 epochs, patience 20) and configs drawn from the default search space with their sampled
training settings; one torch thread per trial; trials/hour counts 2 trials running side by side on the 2 cores.

``--baseline REV`` times every trial twice in the same run, once with the code of git revision REV (checked out
in a temporary worktree) and once with the working tree, each in its own subprocess, alternating which goes
first; the table then shows both.

Streaming: one epoch of :func:`dtl_dist.nn.stream.fit_library` over a 50,000-sample synthetic library store
(batch 256), a small 1D-CNN, 2 torch threads.

Usage: python benchmarks/bench_tune.py [--quick] [--baseline REV]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# dtl_dist is imported inside functions: the --time-case worker also runs against an older revision.
REPO = Path(__file__).resolve().parents[1]


def _limesoda(site: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reflectance fraction, wavelengths and carbon column of a LimeSoDa site (``limesoda`` package)."""
    import LimeSoDa

    frame = LimeSoDa.load_dataset(site)["Dataset"]
    bands = [c for c in frame.columns if str(c).startswith("wl_")]
    target = next(c for c in frame.columns if c.endswith("_target") and c[:3] in ("SOC", "SOM"))
    return frame[bands].to_numpy(np.float64) / 100, np.array([float(c[3:]) for c in bands]), frame[target].to_numpy()


def library_spectra() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid, reflectance on it and carbon of the stand-in library: Geeves NSW (DTL_DATA) on 400-2500 nm, else
    three LimeSoDa sites on 420-2500 nm (they start at 420 nm)."""
    from dtl_dist.library.real_data import data_dir
    from dtl_dist.spectra.grid import make_grid, resample

    folder = data_dir()
    if folder is not None:
        grid, geeves = make_grid(), np.load(folder / "geeves_nsw" / "datsoilspc.npz")
        return grid, resample(geeves["X"].astype(np.float64), geeves["wavelengths"], grid), geeves["y"]
    grid, parts = make_grid(420, 2500, 10), [_limesoda(site) for site in ("SC.93", "SL.125", "UL.120")]
    return grid, np.vstack([resample(R, wl, grid) for R, wl, _ in parts]), np.concatenate([y for _, _, y in parts])


def localised_set() -> tuple[np.ndarray, np.ndarray]:
    from dtl_dist.spectra.grid import resample
    from dtl_dist.spectra.preprocess import SNV

    grid, library, library_y = library_spectra()
    cv98, cv98_wl, cv98_y = _limesoda("CV.98")
    rng = np.random.default_rng(0)
    g = rng.choice(len(library_y), 100, replace=False)
    c = rng.choice(len(cv98_y), 30, replace=False)
    X = SNV().fit_transform(np.log10(1 / np.vstack([library[g], resample(cv98[c], cv98_wl, grid)])))
    y = np.concatenate([library_y[g], cv98_y[c]]).astype(np.float64)
    return X, y


def trial_cases(X: np.ndarray, quick: bool, n_sampled: int) -> list[tuple]:
    """Paper's DTL-I_g China architecture with TrainConfig defaults, then configs drawn from the default space
    (architecture and training settings as the search would sample them, seed 0): (name, cnn dict, train dict)."""
    from dtl_dist.nn import paper_architectures as paper
    from dtl_dist.nn.space import default_space
    from dtl_dist.nn.trainer import TrainConfig

    space = default_space()
    rng = np.random.default_rng(0)
    cases = [("Table 4 DTL-I_g China", paper.DTL_IG_CHINA, TrainConfig())]
    while len(cases) < 1 + n_sampled:
        flat = space.sample(rng)
        if not space.validate(flat, X.shape[1]):
            cnn, train = space.to_config(flat)
            cases.append((f"sampled #{len(cases)}", cnn, train))
    out = []
    for name, cnn, train in cases:
        train = train.to_dict()
        if quick:
            train["max_epochs"] = min(train["max_epochs"], 20)
        out.append((name, cnn.to_dict(), train))
    return out


def time_case(path: str) -> None:
    """Worker: time one trial in both fold modes with whatever ``dtl_dist`` is importable; print JSON."""
    from dtl_dist.nn.builder import CNNConfig, parameter_count
    from dtl_dist.nn.trainer import TrainConfig, cross_validate

    torch.set_num_threads(1)
    with open(path, "rb") as fh:
        X, y, cnn, train = pickle.load(fh)
    config, train = CNNConfig.from_dict(cnn), TrainConfig.from_dict(train)
    out = {"parameters": parameter_count(config, X.shape[1])}
    for mode in ("sequential", "vectorised"):
        start = time.perf_counter()
        cv = cross_validate(X, y, config, train, folds=10, mode=mode)
        out[mode] = time.perf_counter() - start
        out["epochs"], out["rmse"] = float(cv.epochs.mean()), float(cv.mean_rmse)
    print(json.dumps(out))


def _run_case(case_file: Path, source: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source)}
    proc = subprocess.run([sys.executable, __file__, "--time-case", str(case_file)], env=env, capture_output=True,
                          text=True, check=True, cwd=source)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_trials(quick: bool, n_sampled: int, baseline: str | None) -> None:
    X, y = localised_set()
    cases = trial_cases(X, quick, n_sampled)
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"current": REPO}
        if baseline:
            worktree = Path(tmp) / "baseline"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), baseline],
                           check=True, capture_output=True)
            sources = {f"baseline {baseline}": worktree, "current": REPO}
        try:
            totals = {name: {"sequential": 0.0, "vectorised": 0.0} for name in sources}
            print(f"data: {X.shape[0]} x {X.shape[1]} bands; one torch thread per trial; load {os.getloadavg()[0]:.2f}")
            print("| config | code | parameters | epochs (mean) | CV RMSE | sequential s | vectorised s "
                  "| trials/h seq | trials/h vec |")
            print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
            for i, (name, cnn, train) in enumerate(cases):
                case_file = Path(tmp) / f"case{i}.pkl"
                case_file.write_bytes(pickle.dumps((X, y, cnn, train)))
                order = list(sources) if i % 2 == 0 else list(sources)[::-1]
                results = {code: _run_case(case_file, sources[code]) for code in order}
                for code in sources:
                    r = results[code]
                    totals[code]["sequential"] += r["sequential"]
                    totals[code]["vectorised"] += r["vectorised"]
                    print(f"| {name} | {code} | {r['parameters']:,} | {r['epochs']:.0f} | {r['rmse']:.3f} | "
                          f"{r['sequential']:.1f} | {r['vectorised']:.1f} | {2 * 3600 / r['sequential']:.0f} | "
                          f"{2 * 3600 / r['vectorised']:.0f} |", flush=True)
            n = len(cases)
            for code, t in totals.items():
                print(f"| all {n} | {code} | | | | {t['sequential']:.1f} | {t['vectorised']:.1f} | "
                      f"{2 * 3600 * n / t['sequential']:.0f} | {2 * 3600 * n / t['vectorised']:.0f} |")
        finally:
            if baseline:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=True)


def bench_stream(quick: bool) -> tuple[int, float]:
    from dtl_dist.library.synthetic import write_library
    from dtl_dist.nn.builder import CNNConfig, ConvBlock, FCBlock
    from dtl_dist.nn.stream import fit_library
    from dtl_dist.nn.trainer import TrainConfig

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
    parser.add_argument("--baseline", help="git revision to time side by side with the working tree")
    parser.add_argument("--no-stream", action="store_true", help="skip the streamed-training measurement")
    parser.add_argument("--time-case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time_case:
        time_case(args.time_case)
        return
    bench_trials(args.quick, args.sampled, args.baseline)
    if not args.no_stream:
        n, rate = bench_stream(args.quick)
        print(f"\nstreamed library training: {n:,} samples, {rate:,.0f} samples/s")


if __name__ == "__main__":
    main()
