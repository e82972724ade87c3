"""bench_rslocal_layouts: RS-LOCAL (paper section 2.3.2) in several engine layouts on one synthetic library:
wall time, efficiency against the in-process run, memory per role and per node, same selection (issue 10).

Each layout runs ``dtl rslocal`` as a subprocess (benchmarks/layouts.py: ``inprocess:T``, ``local:WxT``,
``mpiexec:NxT``) on the same library and site, one after the other, while its processes' memory is sampled.
The first layout is the reference: efficiency = its wall time / the layout's (same cores), speed-up = the
``inprocess:1`` wall time / the layout's when that layout is in the list; "search" columns time the search
alone (``driver_s + engine_s`` of baseline.json), fits/s = the trace's subsets / search seconds.

Usage (defaults: N = 50,000, k = 100, the paper's m = 100, b = 40, retain = 0.95, 10 components):

  python benchmarks/bench_rslocal_layouts.py --n 50000 \\
      --layouts inprocess:2 local:1x1 local:1x2 local:1x4 local:2x1 local:4x1 mpiexec:3x2 mpiexec:4x1
  python benchmarks/bench_rslocal_layouts.py --n 1000000 --layouts inprocess:2 local:2x1 local:1x2 mpiexec:4x1 mpiexec:3x2
  python benchmarks/bench_rslocal_layouts.py --n 50000 --k-fraction 0.5 ...   # memory only: first iterations

``--k-fraction F`` stops the search at k = F N and labels all 30 site samples, so no PLS baseline is fitted on
the k + n samples afterwards: a memory run (the peak is reached in the first iterations; the wall time is then
not the full search's).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from layouts import Layout, run_layout

from dtl_dist.library.synthetic import write_library, write_site
from dtl_dist.study.select_local import select_local

GB = 1e9


def machine() -> str:
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def out_trace(out: Path) -> list[dict]:
    """The run's trace.csv rows."""
    with open(out / "trace.csv") as fh:
        return list(csv.DictReader(fh))


def fits(trace: list[dict]) -> int:
    """PLS fits of a search: its subsets, over all iterations."""
    return sum(int(row["n_subsets"]) for row in trace)


def search_s(run) -> float:
    """Seconds of the search itself (the driver's serial part + waiting for the engine), from baseline.json."""
    return run.baseline.get("driver_s", float("nan")) + run.baseline.get("engine_s", float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="library samples")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--k-fraction", type=float, default=None, help="stop at k = F N (memory runs)")
    parser.add_argument("--layouts", nargs="+", default=["inprocess:2", "local:1x2", "local:2x1", "mpiexec:3x2"])
    parser.add_argument("--options", default="", help="more dtl rslocal options, e.g. '--b 20'")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the stores (default: a temp dir)")
    args = parser.parse_args()
    k = int(args.k_fraction * args.n) if args.k_fraction else args.k
    options = ["--k", str(k), "--seed", "0", *args.options.split()]
    layouts = [Layout.parse(text) for text in args.layouts]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        write_library(tmp / "lib.zarr", args.n, seed=10)
        # a memory run labels all 30 site samples: no local_test, so no PLS baselines on the k + n (large) samples
        write_site(tmp / "site.zarr", 30 if args.k_fraction else 80, seed=11)
        select_local(tmp / "site.zarr", 30)
        library_gb = args.n * 211 * 4 / GB
        print(f"machine: {machine()}; library N = {args.n:,} x 211 float32 = {library_gb:.2f} GB; k = {k}; "
              f"options {' '.join(options)}")
        print("| layout | wall s | search s | load before | efficiency | speed-up | search speed-up | fits/s | "
              "driver serial s | driver peak RSS GB | scheduler RSS GB | per-worker peak RSS GB | workers PSS GB | "
              "node PSS GB | same selection |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        runs = []
        for layout in layouts:
            run = run_layout(layout, tmp / "lib.zarr", tmp / "site.zarr", tmp / "out", options)
            runs.append(run)
            single = next((r for r in runs if r.layout.kind == "inprocess" and r.layout.threads == 1), None)
            rss = run.peak_rss
            speed_up = "-" if single is None else f"{single.wall_s / run.wall_s:.2f}"
            search_speed_up = "-" if single is None else f"{search_s(single) / search_s(run):.2f}"
            print(f"| {layout} | {run.wall_s:.1f} | {search_s(run):.1f} | {run.load_before:.2f} | "
                  f"{runs[0].wall_s / run.wall_s:.2f} | {speed_up} | {search_speed_up} | "
                  f"{fits(out_trace(tmp / 'out')) / search_s(run):,.0f} | "
                  f"{run.baseline.get('driver_s', math.nan):.1f} | "
                  f"{rss.get('driver', 0) / GB:.2f} | {rss.get('scheduler', 0) / GB:.2f} | "
                  f"{rss.get('worker', 0) / GB:.2f} | {run.workers_pss / GB:.2f} | {run.node_pss / GB:.2f} | "
                  f"{run.selected == runs[0].selected} |", flush=True)
        print(f"last run: {runs[-1].summary_line}; load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
