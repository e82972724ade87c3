"""bench_small_data: what makes a 1D-CNN worth using on 30 labelled samples (the study issue, item 6).

For each LimeSoDa vis-NIR site (n = 30 by Kennard-Stone, the rest local_test), the study's ``Local`` model
(nested search over the known-good small CNNs, :mod:`dtl_dist.study.cnn`) is built with each variant below and
compared with local PLS (components by the same inner folds) on local_test: test RMSE, the ratio to PLS, and the
spread of the estimates against the observed one (a CNN that predicts nearly one value has a small spread).

Variants: ``scaling`` of the CNN input (band-wise standardisation) and SOC (standardised, mapped back), on or off;
inner folds 5 or 10 (the fold ensemble's models see 80 % or 90 % of the samples); and the same candidates with
seeded random draws from the default space added (trials 8, and 100: a larger budget).

Usage: python benchmarks/bench_small_data.py [--sites UL.120 SL.125 CV.98 SC.93] [--variants NAME ...]
(default: every variant but the 100-trial one)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from dtl_dist.engines import ray as ray_engine
from dtl_dist.library.ingest import REAL_DATA_GRID, ingest, limesoda_source
from dtl_dist.nn.space import Categorical
from dtl_dist.study import baselines, cnn
from dtl_dist.study.config import StudyConfig
from dtl_dist.study.context import StudyContext
from dtl_dist.study.data import load_study_data
from dtl_dist.study.designs import local_design

VARIANTS = {
    "no scaling, 5 inner folds": {"scaling": "none", "inner_folds": 5, "trials": 4},
    "scaling, 5 inner folds": {"scaling": "standard", "inner_folds": 5, "trials": 4},
    "scaling, 10 inner folds (quick budget)": {"scaling": "standard", "inner_folds": 10, "trials": 4},
    "scaling, 10 inner folds, + 4 random draws": {"scaling": "standard", "inner_folds": 10, "trials": 8},
    "scaling, 10 inner folds, 100 trials (larger budget)": {"scaling": "standard", "inner_folds": 10, "trials": 100},
}


def site_stores(site: str, folder: Path) -> tuple[Path, Path]:
    """The site's store and the store of the other Swedish site (a library the study needs but Local never
    reads), written into ``folder``."""
    store = ingest([limesoda_source(site)], folder / f"{site}.zarr", grid=REAL_DATA_GRID)
    other = "SL.125" if site != "SL.125" else "UL.120"
    library = ingest([limesoda_source(other)], folder / f"{site}_library.zarr", grid=REAL_DATA_GRID)
    return store.path, library.path


def run_variant(site_store: Path, other: Path, out: Path, variant: dict, task_map) -> dict:
    config = StudyConfig(library=str(other), site=str(site_store), out=str(out), workers=0,
                         inner_folds=variant["inner_folds"], trials=variant["trials"])
    out.mkdir(parents=True, exist_ok=True)
    data = load_study_data(config, out)
    ctx = StudyContext(config, data, out, task_map, None, lambda line: None)
    original = cnn.default_space
    cnn.default_space = lambda: original({"scaling": Categorical((variant["scaling"],))})
    cnn_starters = cnn.starters
    cnn.starters = lambda *a: [{**s, "scaling": variant["scaling"]} for s in cnn_starters(*a)]
    try:
        start = time.perf_counter()
        (out / "Local").mkdir(exist_ok=True)
        model = cnn.search_stage(ctx, "Local", local_design(data), out / "Local", "local samples")
        seconds = time.perf_counter() - start
    finally:
        cnn.default_space, cnn.starters = original, cnn_starters
    (out / "pls").mkdir(exist_ok=True)
    pls = baselines.pls_stage(ctx, "local-PLS", local_design(data), out / "pls")
    observed = data.test_y()

    def rmse(values):
        return float(np.sqrt(np.mean((np.asarray(values) - observed) ** 2)))

    return {"cnn": rmse(model["test_predictions"]), "pls": rmse(pls["test_predictions"]),
            "spread": float(np.std(model["test_predictions"]) / np.std(observed)),
            "cv": float(np.sqrt(np.mean((np.asarray(model["cv_predictions"]) - data.local_y) ** 2))),
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", nargs="+", default=["UL.120", "SL.125", "CV.98", "SC.93"])
    parser.add_argument("--variants", nargs="+", default=[v for v in VARIANTS if "100 trials" not in v])
    args = parser.parse_args()
    ray_engine.init(None, 2)
    task_map = ray_engine.map_blocks(num_cpus=1)
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print("| variant | site | CNN test RMSE | local PLS | CNN / PLS | sd(est) / sd(obs) | CNN cv_rmse | s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for site in args.sites:
            store, library = site_stores(site, tmp)
            for name in args.variants:
                r = run_variant(store, library, tmp / f"{site}_{len(name)}_{name[:5]}", VARIANTS[name],
                                task_map)
                print(f"| {name} | {site} | {r['cnn']:.3f} | {r['pls']:.3f} | {r['cnn'] / r['pls']:.3f} | "
                      f"{r['spread']:.2f} | {r['cv']:.3f} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
