"""bench_rslocal_serial: the serial part of an RS-LOCAL search (paper section 2.3.2) at 1M and 10M samples, for
the cluster estimate in benchmarks/README.md (issue 10).

Per iteration, before and after its subsets are scored in parallel: the driver draws the iteration's subsets
(``draw_subsets``, b permutations of the pool) and so does every worker process (at the same time as the others,
so once in the wall time); then the driver sums the weaknesses (``weakness``), draws the tie keys and ranks
the pool (``drop_weakest``). Timed here for the first iteration (pool = N); an iteration keeps ``retain`` of the
pool and the costs are linear in it, so the whole search costs the first iteration's times 1 / (1 - retain)
(the geometric series; 20 for the paper's 0.95).

Usage: python benchmarks/bench_rslocal_serial.py [--n 1000000 10000000] [--b 40] [--m 100]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from dtl_dist.select.rslocal import draw_subsets, drop_share, drop_weakest, tie_keys, weakness


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--b", type=int, default=40)
    parser.add_argument("--m", type=int, default=100)
    parser.add_argument("--retain", type=float, default=0.95)
    args = parser.parse_args()
    series = 1 / (1 - args.retain)
    print(f"load average {os.getloadavg()[0]:.2f}; b = {args.b}, m = {args.m}; search = first iteration x {series:g}")
    print("| N | draw s (driver; again on each worker) | weakness s | tie keys + rank s | first iteration s | "
          "whole search s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.n:
        subsets, t_draw = timed(draw_subsets, n, args.m, args.b, 0, 0, np.int32)
        scores = np.random.default_rng(0).random(len(subsets))
        weak, t_weak = timed(weakness, subsets, scores, n)
        del subsets
        start = time.perf_counter()
        drop_weakest(weak, drop_share(n, 100, args.retain), tie_keys(n, 0, 0))
        t_rank = time.perf_counter() - start
        first = 2 * t_draw + t_weak + t_rank
        print(f"| {n:,} | {t_draw:.2f} | {t_weak:.2f} | {t_rank:.2f} | {first:.1f} | {first * series:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
