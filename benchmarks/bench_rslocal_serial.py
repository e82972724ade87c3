"""bench_rslocal_serial: the driver's serial part of an RS-LOCAL search (paper section 2.3.2) at 1M and 10M
samples, for the cluster estimate in benchmarks/README.md (issues 10 and 15).

Per iteration the driver (``dtl_dist.select.rslocal._search``) merges the groups' sketches and brackets the
cut (``bracket``), finds the exact cut in the candidates the groups send (``find_cut``) and computes the trace's
subset score quantiles over all subsets; the draws, the scoring, the weakness sums and the ranking run on the
workers that own the groups. Timed here for the first iteration (pool = N, 0.4 N subsets, one group per shard
of 16,384 rows: the inputs the driver gets, built as a worker builds them); an iteration keeps ``retain`` of the
pool and these costs are at most linear in it, so the whole search costs at most the first iteration's times
1 / (1 - retain) (the geometric series; 20 for the paper's 0.95). The round trips to the workers (3 per
iteration, a few ms each on a cluster) are not included: bench_rslocal_layouts reports the driver's serial
time of real runs (``driver_s`` of baseline.json), which includes its share of them.

Usage: python benchmarks/bench_rslocal_serial.py [--n 1000000 10000000] [--b 40] [--m 100]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from dtl_dist.select.rslocal import TRACE_QUANTILES, drop_share
from dtl_dist.select.shards import SHARD_ROWS, bracket, count_at_or_above, drop_order, find_cut, sketch, tie_keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--b", type=int, default=40)
    parser.add_argument("--m", type=int, default=100)
    parser.add_argument("--retain", type=float, default=0.95)
    args = parser.parse_args()
    series = 1 / (1 - args.retain)
    rng = np.random.default_rng(0)
    print(f"load average {os.getloadavg()[0]:.2f}; b = {args.b}, m = {args.m}; search = first iteration x {series:g}")
    print("| N | groups | subsets | bracket s | candidates sent | cut s | score quantiles s | first iteration s | "
          "whole search s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.n:
        groups = -(-n // SHARD_ROWS)
        ranked = {}
        for g, rows in enumerate(np.array_split(np.arange(n), groups)):  # what each worker ranks (not timed)
            w = rng.gamma(20, 0.05, rows.size)
            keys = tie_keys(rows, 0, 0)
            order = drop_order(w, keys)
            ranked[g] = (-w[order], keys[order])
        scores = rng.gamma(20, 0.05, round(n * args.b / args.m))
        d = drop_share(n, 100, args.retain)
        sketches = {g: sketch(*r) for g, r in ranked.items()}
        start = time.perf_counter()
        high, low = bracket(sketches, d)
        t_bracket = time.perf_counter() - start
        candidates = {}
        for g, (neg_w, keys) in ranked.items():  # on the workers (not timed)
            a = 0 if high is None else count_at_or_above(neg_w, keys, high)
            z = count_at_or_above(neg_w, keys, low)
            candidates[g] = (a, -neg_w[a:z], keys[a:z])
        start = time.perf_counter()
        find_cut(candidates, d, high)
        t_cut = time.perf_counter() - start
        start = time.perf_counter()
        np.quantile(scores[np.isfinite(scores)], TRACE_QUANTILES)
        t_quantiles = time.perf_counter() - start
        first = t_bracket + t_cut + t_quantiles
        sent = sum(len(c[1]) for c in candidates.values())
        print(f"| {n:,} | {groups:,} | {scores.size:,} | {t_bracket:.3f} | {sent:,} | {t_cut:.3f} | "
              f"{t_quantiles:.3f} | {first:.2f} | {first * series:.1f} |", flush=True)


if __name__ == "__main__":
    main()
