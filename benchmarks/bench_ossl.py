"""bench_ossl: throughput and peak memory of ``dtl ingest --format ossl`` on a synthetic OSSL v1.2 all-table.

Writes N synthetic layers in the OSSL layout (``ossl_all_L0_v1.2.csv.gz``: 1,076 vis-NIR columns 350-2500 nm,
site, soil-lab and a few MIR columns; :mod:`dtl_dist.library.ossl_synthetic`), kept in ``--dir`` for reuse, then
runs ``dtl ingest --format ossl`` as a subprocess (all rows, and with ``--where dataset=LUCAS.SSL``), sampling the
resident memory of the process every 0.1 s, and prints a markdown table: wall time, rows read per second,
rows written, peak RSS; beside them the baseline, pandas alone parsing the same columns in the same chunks.

Usage: .venv/bin/python benchmarks/bench_ossl.py [--n 100000] [--dir benchmarks/out] [--grid 400:2500:10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench_synth import tree_rss
from dtl_dist.library.ossl_synthetic import write_ossl
from dtl_dist.library.store import SpectralLibrary


def run(cmd: list[str]) -> dict:
    """Wall time, peak RSS (sampled every 0.1 s) and stdout of a subprocess."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(ps)[0])
        time.sleep(0.1)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed: {proc.stderr.read().decode()[-2000:]}")
    return {"wall": wall, "peak": peak, "line": proc.stdout.read().decode().strip()}


PANDAS_FLOOR = """
import sys, pandas as pd
from dtl_dist.library.ossl import OsslReader
reader = OsslReader([sys.argv[1]])
reader.for_grid([{low}, 2500.0])
n = sum(len(f) for f in pd.read_csv(sys.argv[1], usecols=reader._needed(), chunksize=5000))
print(n)
"""
"""The baseline: pandas parsing the same columns in the same chunks, nothing converted or written."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--grid", default="400:2500:10")
    args = parser.parse_args()
    folder = args.dir / f"ossl_{args.n}"
    table = folder / "ossl_all_L0_v1.2.csv.gz"
    print(f"machine: {os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.1f}")
    if not table.exists():
        start = time.perf_counter()
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        write_ossl(partial, args.n, seed=0)
        partial.rename(folder)
        print(f"wrote {table} ({args.n:,} rows) in {time.perf_counter() - start:.0f} s")
    print(f"table: {table.stat().st_size / 1e6:,.0f} MB gzip, {args.n:,} rows\n")
    print("| run | wall s | rows read/s | rows written | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    dtl = str(Path(sys.executable).parent / "dtl")
    low = float(args.grid.split(":")[0])
    floor = run([sys.executable, "-c", PANDAS_FLOOR.format(low=low), str(table)])
    print(f"| baseline: pandas read_csv of the same columns, chunks of 5,000 | {floor['wall']:.1f} | "
          f"{args.n / floor['wall']:,.0f} | - | {floor['peak'] / 1e6:,.0f} |", flush=True)
    for label, extra in (("dtl ingest --format ossl, all rows", []),
                         ("dtl ingest --format ossl --where dataset=LUCAS.SSL", ["--where", "dataset=LUCAS.SSL"])):
        out = folder / "bench.zarr"
        r = run([dtl, "ingest", "--format", "ossl", str(table), "--out", str(out), "--grid", args.grid, "--quiet",
                 "--overwrite", *extra])
        written = SpectralLibrary.open(out).n_samples
        shutil.rmtree(out)
        print(f"| {label} | {r['wall']:.1f} | {args.n / r['wall']:,.0f} | {written:,} | {r['peak'] / 1e6:,.0f} |",
              flush=True)
        print(f"<!-- {r['line']} -->")
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
