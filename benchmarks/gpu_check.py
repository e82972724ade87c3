"""gpu_check: the study's GPU paths on one GPU node, in one run under 8 minutes (issue 19); run by gpu_check.sh.

1. versions: torch, its CUDA and the GPUs torch sees;
2. the batched PLS kernel (``pls1_fit`` + predict, float32) on CUDA against the compiled CPU kernel
   (``pls_compiled.subset_scores``, the RS-LOCAL path): fits/s of each and the largest difference of the subset
   scores (RMSE on the local samples);
3. a search of the study's small 1D-CNNs (:data:`dtl_dist.nn.space.SMALL_DATA_STARTERS`, cycled) on a local Ray
   with the machine's GPUs, ``--trials`` trials of ``--folds`` folds on the k + n = 130 localised data, once at
   each of ``--gpus-per-trial`` (0.25 and 0.125: four and eight trials per GPU): trials per GPU-hour and the GPU
   utilisation nvidia-smi reported every 0.5 s during the search;
4. one study stage end to end (the Global search: the library's CNN, its trials as Ray tasks on the GPUs, the
   model saved and reloaded on the CPU) with its wall time.

Figures go to ``--out`` (JSON, one file). ``--dry-run`` runs the same code on the CPU at tiny sizes, with a local
Ray that has one logical GPU (the tasks are given GPU ids and choose the CPU, as on a machine without CUDA).

Usage: python benchmarks/gpu_check.py [--dry-run] [--out gpu_check.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from dtl_dist.engines import ray as ray_engine
from dtl_dist.library.synthetic import make_library, write_library
from dtl_dist.linear import pls1_fit_predict, pls_compiled
from dtl_dist.nn.model_dir import load_model
from dtl_dist.nn.search import CandidateRunner, TuneData, tune
from dtl_dist.nn.space import SMALL_DATA_STARTERS, default_space
from dtl_dist.spectra.preprocess import SNV
from dtl_dist.study.task_log import read_tasks

FULL = dict(pls_subsets=8192, pls_m=100, pls_ncomp=10, trials=40, folds=10, samples=130, max_epochs=100,
            library=5_000, stage=dict(trials=8, max_epochs=20))
DRY = dict(pls_subsets=64, pls_m=30, pls_ncomp=4, trials=4, folds=3, samples=40, max_epochs=2, library=200,
           stage=dict(trials=2, max_epochs=2, n_local=15, k=20, subset=20, b=4, ncomp=3, cv_folds=2, inner_folds=2))


class GpuSampler:
    """GPU utilisation (%) from ``nvidia-smi`` every 0.5 s while the body runs (nothing without nvidia-smi)."""

    def __init__(self):
        self.samples: list[float] = []
        self.proc = None

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "500"], stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                pass

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean_pct": None, "gpu_util_max_pct": None, "samples": 0}
        return {"gpu_util_mean_pct": float(np.mean(self.samples)), "gpu_util_max_pct": float(np.max(self.samples)),
                "samples": len(self.samples)}


def versions(device: str) -> dict:
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if device == "cuda" else []
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "hip": getattr(torch.version, "hip", None),
            "gpus": gpus, "cpus": os.cpu_count(), "python": platform.python_version()}


def pls_check(size: dict, device: str) -> dict:
    """Fits/s of the batched kernel on ``device`` and of the compiled CPU kernel; largest score difference."""
    rng = np.random.default_rng(0)
    lib = make_library(max(4 * size["pls_m"], 2000), seed=1)
    X = SNV().fit_transform(lib.spectra).astype(np.float32)
    y = lib.soc.astype(np.float32)
    local = rng.choice(len(y), 30, replace=False)
    subsets = np.stack([rng.choice(len(y), size["pls_m"], replace=False) for _ in range(size["pls_subsets"])])
    A = size["pls_ncomp"]
    pls_compiled.subset_scores(X, subsets[:8], y, X[local], y[local], A)  # compile first
    start = time.perf_counter()
    cpu = pls_compiled.subset_scores(X, subsets, y, X[local], y[local], A)
    cpu_s = time.perf_counter() - start
    Xt, yt, Lt = (torch.as_tensor(a, device=device) for a in (X[subsets], y[subsets], X[local]))
    pls1_fit_predict(Xt[:8], yt[:8], Lt, A)  # warm-up (CUDA context, kernels)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    pred = pls1_fit_predict(Xt, yt, Lt, A)
    sync()
    dev_s = time.perf_counter() - start
    scores = torch.sqrt(torch.mean((pred - torch.as_tensor(y[local], device=device)) ** 2, dim=1)).cpu().numpy()
    return {"subsets": len(subsets), "m": size["pls_m"], "ncomp": A, "device": device,
            "device_fits_per_s": len(subsets) / dev_s, "cpu_compiled_fits_per_s": len(subsets) / cpu_s,
            "max_abs_score_diff": float(np.max(np.abs(scores - cpu))), "score_scale": float(np.median(cpu))}


def search_check(size: dict, gpus_per_trial: float, gpus: int, folder: Path) -> dict:
    """The fixed search at ``gpus_per_trial``: wall time, trials per GPU-hour, GPU utilisation, task devices."""
    lib = make_library(size["samples"], seed=3)
    data = TuneData.make(SNV().fit_transform(lib.spectra), lib.soc, folds=size["folds"], seed=0,
                         wavelengths=lib.wavelengths)
    records: list[dict] = []
    cpus, gpus_each = ray_engine.trial_resources(1, gpus_per_trial)
    runner = CandidateRunner(folder, map_blocks=ray_engine.map_blocks(num_cpus=cpus, num_gpus=gpus_each,
                                                                      on_task=records.append),
                             starters=[dict(s, batch_size=32) for s in SMALL_DATA_STARTERS] * size["trials"],
                             chunk=size["trials"])
    with GpuSampler() as sampler:
        start = time.perf_counter()
        result = tune(data, default_space(), trials=size["trials"], runner=runner, seed=0, mode="auto",
                      max_epochs=size["max_epochs"])
        wall = time.perf_counter() - start
    return {"gpus_per_trial": gpus_per_trial, "trials": size["trials"], "folds": size["folds"],
            "complete": len(result.complete), "wall_s": wall,
            "trials_per_gpu_hour": size["trials"] / (wall / 3600) / max(gpus, 1),
            "devices": sorted({r["device"] for r in records}), "gpu_ids": sorted({i for r in records for i in r["gpu_ids"]}),
            **sampler.summary()}


def stage_check(size: dict, gpus_per_trial: float, folder: Path) -> dict:
    """The study's search stages end to end (RS-LOCAL in-process first, then ``--only search`` with the trials as
    Ray tasks on the GPUs); per-stage seconds from stage.json, task devices from tasks.jsonl, and the Global
    model reloaded and predicting on the CPU."""
    from dtl_dist.library.synthetic import write_site
    from dtl_dist.study.config import StudyConfig
    from dtl_dist.study.run import run_study

    write_library(folder / "lib.zarr", size["library"], seed=5)
    write_site(folder / "site.zarr", 60, seed=6)
    base = dict(library=str(folder / "lib.zarr"), site=str(folder / "site.zarr"), out=str(folder / "run"),
                workers=0, **size["stage"])
    run_study(StudyConfig(only=("rslocal",), **base), echo=lambda line: None)
    start = time.perf_counter()
    run_study(StudyConfig(only=("search",), resume=True, gpus_per_trial=gpus_per_trial, **base), echo=print)
    wall = time.perf_counter() - start
    run = folder / "run"
    stages = {p.name: json.loads((p / "stage.json").read_text())["seconds"] for p in sorted((run / "stages").iterdir())
              if (p / "stage.json").is_file()}
    tasks = read_tasks(run)
    site = make_library(10, seed=7)
    prediction = load_model(run / "models" / "Global").predict(site.spectra)
    return {"library": size["library"], "trials_per_search": size["stage"]["trials"], "wall_s": wall,
            "stage_s": stages, "tasks": len(tasks), "devices": sorted({t["device"] for t in tasks}),
            "reloaded_prediction_finite": bool(np.isfinite(prediction).all())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same code on the CPU at tiny sizes")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--gpus-per-trial", type=float, nargs="+", default=[0.25, 0.125])
    args = parser.parse_args()
    size = DRY if args.dry_run else FULL
    device = "cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"
    if not args.dry_run and device != "cuda":
        raise SystemExit("error: torch sees no CUDA device (torch.cuda.is_available() is False); use --dry-run on a "
                         "CPU machine")
    gpus = torch.cuda.device_count() if device == "cuda" else 1
    report = {"mode": "dry-run" if args.dry_run else "gpu", "versions": versions(device),
              "load_average": os.getloadavg()[0]}
    print(json.dumps(report["versions"]), flush=True)
    report["pls"] = pls_check(size, device)
    print(f"PLS: {report['pls']}", flush=True)
    import ray

    for key, value in (ray_engine.QUIET_ENV | ray_engine.LOOPBACK_ENV).items():
        os.environ.setdefault(key, value)
    ray.init(num_cpus=os.cpu_count(), num_gpus=gpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=512 * 2**20, configure_logging=False)  # dry run: one logical GPU
    try:
        with tempfile.TemporaryDirectory() as tmp:
            report["search"] = []
            for fraction in args.gpus_per_trial:
                report["search"].append(search_check(size, fraction, gpus, Path(tmp) / f"search{fraction}"))
                print(f"search: {report['search'][-1]}", flush=True)
            report["stage"] = stage_check(size, args.gpus_per_trial[0], Path(tmp) / "stage")
            print(f"stage: {report['stage']}", flush=True)
    finally:
        ray.shutdown()
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
