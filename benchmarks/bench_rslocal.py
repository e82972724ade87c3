"""RS-LOCAL-v2.0 end to end (issue 3, paper section 2.3.2): synthetic library -> k = 100 with the defaults
(m = 100, b = 40, retain = 0.95, 10 components), time against library size with the fitted growth exponent,
Dask LocalCluster(2 workers) against in-process, and the real-data check (library = the other LimeSoDa vis-NIR
sites, plus Geeves NSW when DTL_DATA holds it; site = CV.98 with n = 30 by Kennard-Stone): RS-LOCAL-PLS beside
local PLS.

Usage: python benchmarks/bench_rslocal.py [--sizes 10000 50000 200000] [--dask-size 50000] [--no-real]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

from dtl_dist.engines import dask as dask_engine  # noqa: E402
from dtl_dist.library.ingest import REAL_DATA_GRID, ingest, limesoda_source  # noqa: E402
from dtl_dist.library.real_data import build_real_library, data_dir  # noqa: E402
from dtl_dist.library.synthetic import write_library, write_site  # noqa: E402
from dtl_dist.study.rslocal_stage import RSLocalConfig, run_rslocal  # noqa: E402
from dtl_dist.study.select_local import select_local  # noqa: E402


def machine() -> str:
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    return f"{model}, {os.cpu_count()} cores, {platform.python_version()}; load average {load()}"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed_stage(config: RSLocalConfig) -> tuple[float, dict]:
    start = time.perf_counter()
    summary = run_rslocal(config, echo=lambda line: None, progress=False)
    return time.perf_counter() - start, summary


def synthetic(tmp: Path, sizes, dask_size) -> None:
    site = tmp / "site.zarr"
    write_site(site, 80, seed=11)
    select_local(site, 30)
    print(f"{'library N':>10} {'engine':>23} {'wall s':>8} {'load before':>16} {'iterations':>10} "
          f"{'n_selected':>10} {'RS-LOCAL-PLS RMSE':>17} {'local PLS RMSE':>14} {'driver max GB':>13}")
    times, outs = {}, {}
    for n in sorted(set(sizes) | ({dask_size} if dask_size else set())):
        lib = tmp / f"lib_{n}.zarr"
        write_library(lib, n, seed=10)
        engines = [("in-process", {})]
        if n == dask_size:
            engines += [("LocalCluster(2 workers)", {"workers": 2}), ("running LocalCluster(2)", "running")]
        for name, engine in engines:
            if engine == "running":  # started before the clock: what a long-lived cluster costs per search
                cluster = dask_engine.client(n_workers=2)
                engine = {"address": cluster.scheduler.address}
            config = RSLocalConfig(library=str(lib), site=str(site), out=str(tmp / f"out_{n}_{len(times)}"),
                                   **engine)
            before = load()
            wall, s = timed_stage(config)
            if "address" in engine:
                cluster.close()
            times[n if name == "in-process" else name] = wall
            outs[n, name] = (Path(config.out) / "selected.csv").read_text()
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(f"{n:>10} {name:>23} {wall:>8.1f} {before:>16} {s['iterations']:>10} {s['n_selected']:>10} "
                  f"{s['rslocal_pls']['test']['rmse']:>17.3f} "
                  f"{s['local_pls']['test']['rmse']:>14.3f} {rss:>13.2f}", flush=True)
    sizes_run = sorted(k for k in times if isinstance(k, int))
    if len(sizes_run) >= 2:
        slope = np.polyfit(np.log(sizes_run), np.log([times[n] for n in sizes_run]), 1)[0]
        print(f"growth exponent (log wall ~ e log N over {sizes_run}): e = {slope:.2f}")
    for name in ("LocalCluster(2 workers)", "running LocalCluster(2)"):
        if name in times:
            print(f"{name} efficiency vs in-process at N = {dask_size}: {times[dask_size] / times[name]:.2f}; "
                  f"same selection: {outs[dask_size, name] == outs[dask_size, 'in-process']}")


def real(tmp: Path) -> None:
    real_data = build_real_library(tmp / "real", sites=("SC.93", "SL.125", "UL.120"), data_dir=data_dir(),
                                   progress=False)
    lib = real_data.library
    site = ingest([limesoda_source("CV.98")], tmp / "real" / "CV.98.zarr", grid=REAL_DATA_GRID)
    select_local(site.path, 30)
    config = RSLocalConfig(library=str(lib.path), site=str(site.path), out=str(tmp / "out_real"))
    wall, s = timed_stage(config)
    sources = ("Geeves NSW + " if real_data.geeves else "") + "SC.93, SL.125, UL.120"
    print(f"real data: library {lib.n_samples} ({sources}) on {REAL_DATA_GRID} nm, "
          f"site CV.98 n = {s['n']}, local_test {s['rslocal_pls']['test']['n']}; {wall:.1f} s, "
          f"{s['iterations']} iterations, n_selected = {s['n_selected']}")
    for name in ("rslocal_pls", "local_pls"):
        m = s[name]
        print(f"  {name:<12} n_train {m['n_train']:>4}  ncomp {m['ncomp']:>2}  test RMSE {m['test']['rmse']:.3f}  "
              f"R2 {m['test']['r2']:.2f}  bias {m['test']['mean_error']:+.3f}  RPIQ {m['test']['rpiq']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--dask-size", type=int, default=50_000, help="0: no Dask runs")
    parser.add_argument("--no-real", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_real:
            real(Path(tmp))
        synthetic(Path(tmp), args.sizes, args.dask_size)


if __name__ == "__main__":
    main()
