"""bench_synth: time, throughput and peak memory of ``dtl synth`` (synthetic library straight into Zarr).

Runs ``dtl synth --n N --workers W`` as a subprocess for each N and W, samples the resident memory of its
whole process tree (driver + Dask nanny/worker processes) every 0.1 s, and prints a markdown table:
wall time, spectra/s, MB/s of uncompressed float32 spectra, on-disk size of the store, peak RSS of the
tree (sum) and of its largest process. One more row times the generator alone (no writing), in process.
Every store is deleted afterwards.

Usage: .venv/bin/python benchmarks/bench_synth.py [--sizes 100000 1000000] [--workers 1 2] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from dtl_dist.library.synthetic import LibraryGenerator

BANDS = 211
CHUNK_ROWS = 10_000


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """(sum, max) resident bytes over a process and its descendants."""
    rss = []
    for p in [proc, *proc.children(recursive=True)]:
        try:
            rss.append(p.memory_info().rss)
        except psutil.Error:
            pass
    return sum(rss), max(rss, default=0)


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_synth(n: int, workers: int, out: Path) -> dict:
    dtl = Path(sys.executable).parent / "dtl"
    cmd = [str(dtl), "synth", "--n", str(n), "--out", str(out), "--workers", str(workers),
           "--chunk-rows", str(CHUNK_ROWS), "--quiet"]
    env = dict(os.environ, DASK_LOGGING__DISTRIBUTED="error")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    ps, peak_sum, peak_max = psutil.Process(proc.pid), 0, 0
    while proc.poll() is None:
        total, largest = tree_rss(ps)
        peak_sum, peak_max = max(peak_sum, total), max(peak_max, largest)
        time.sleep(0.1)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"dtl synth failed: {proc.stderr.read().decode()[-2000:]}")
    size = du(out)
    shutil.rmtree(out)
    return {"wall": wall, "disk": size, "peak_sum": peak_sum, "peak_max": peak_max}


def generate_only(n: int) -> float:
    gen = LibraryGenerator()
    start = time.perf_counter()
    for s in range(0, n, CHUNK_ROWS):
        gen.rows(s, min(s + CHUNK_ROWS, n))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"machine: {os.cpu_count()} cores, {cpu}, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
          f"Python {platform.python_version()}; load average at start {os.getloadavg()[0]:.1f}")
    print(f"grid 400-2500 nm / 10 nm ({BANDS} bands), chunk_rows {CHUNK_ROWS}, zstd (zarr default)\n")
    print("| N | workers | wall s | spectra/s | MB/s (float32) | on disk MB | peak RSS sum MB | largest process MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench_synth_") as tmp:
        for n in args.sizes:
            raw = n * BANDS * 4
            gen = generate_only(min(n, 100_000)) * n / min(n, 100_000)
            label = "generate only, in process" + (" (100k timed, scaled)" if n > 100_000 else "")
            print(f"| {n:,} | {label} | {gen:.1f} | {n / gen:,.0f} | "
                  f"{raw / gen / 1e6:.0f} | - | - | - |", flush=True)
            for w in args.workers:
                r = run_synth(n, w, Path(tmp) / f"lib_{n}_{w}.zarr")
                print(f"| {n:,} | {w} | {r['wall']:.1f} | {n / r['wall']:,.0f} | {raw / r['wall'] / 1e6:.0f} | "
                      f"{r['disk'] / 1e6:,.0f} | {r['peak_sum'] / 1e6:,.0f} | {r['peak_max'] / 1e6:,.0f} |",
                      flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
