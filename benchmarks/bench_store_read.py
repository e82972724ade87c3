"""bench_store_read: what verified stores cost on the read path of a 1,000,000 x 211 library (issue 17).

Writes a synthetic library (``write_library``, chunks of 10,000 rows: verified, every chunk with zstd's checksum)
and a copy of it as stores were written before (spectra re-encoded with plain zstd and fill value 0, no
``integrity`` record, so it opens through zarr's plain LocalStore). Then reads both, alternating, ``--repeats``
times each, so that both see the same machine load: all spectra (``SpectralLibrary.spectra()``), the spectra in
the shard readers' blocks of 8,192 rows through a ``LibraryRef`` (how RS-LOCAL's workers read), and the open
(which checks that every chunk file is there). Last, ``check_chunks(decode_from=0)`` (``dtl info --verify``)
once. Prints a markdown table of medians; the stores are deleted afterwards.

Usage: .venv/bin/python benchmarks/bench_store_read.py [--n 1000000] [--repeats 5] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from dtl_dist.library import SpectralLibrary
from dtl_dist.library.integrity import ATTRIBUTE, UnverifiedStore
from dtl_dist.library.synthetic import write_library
from dtl_dist.select.shards import PREPROCESS_ROWS
from dtl_dist.spectra.grid import make_grid

CHUNK_ROWS = 10_000


def as_before(verified: Path, path: Path) -> None:
    """Copy ``verified`` to ``path`` as stores were written before: spectra without checksum, fill value 0."""
    shutil.copytree(verified, path)
    meta = json.loads((path / "zarr.json").read_text())
    del meta["attributes"][ATTRIBUTE]
    (path / "zarr.json").write_text(json.dumps(meta))
    source = zarr.open_array(str(verified / "spectra"), mode="r")
    shutil.rmtree(path / "spectra")
    target = zarr.create_array(str(path / "spectra"), shape=source.shape, dtype="float32", chunks=source.chunks,
                               compressors=ZstdCodec(level=0), fill_value=0.0, zarr_format=3)
    for start in range(0, source.shape[0], CHUNK_ROWS):
        target[start:start + CHUNK_ROWS] = source[start:start + CHUNK_ROWS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    warnings.simplefilter("ignore", UnverifiedStore)
    folder = Path(tempfile.mkdtemp(prefix="bench_store_read_", dir=args.dir))
    try:
        start = time.perf_counter()
        write_library(folder / "verified.zarr", args.n, seed=0, wavelengths=make_grid(400, 2500, 10),
                      chunk_rows=CHUNK_ROWS)
        written = time.perf_counter() - start
        as_before(folder / "verified.zarr", folder / "before.zarr")
        stores = {"before (no checksum, fill 0)": folder / "before.zarr", "verified": folder / "verified.zarr"}
        libs = {name: SpectralLibrary.open(path) for name, path in stores.items()}
        assert not libs["before (no checksum, fill 0)"].verified and libs["verified"].verified
        np.testing.assert_array_equal(*(lib.spectra(slice(0, 5)) for lib in libs.values()))
        n, bands = args.n, libs["verified"].n_bands
        mb = n * bands * 4 / 1e6

        def blocks(lib):
            ref = lib.ref()
            for i in range(0, n, PREPROCESS_ROWS):
                ref.spectra(slice(i, min(i + PREPROCESS_ROWS, n)))

        steps = {"open (SpectralLibrary.open)": lambda lib, path: SpectralLibrary.open(path),
                 "spectra(), all rows": lambda lib, path: lib.spectra(),
                 f"LibraryRef.spectra in blocks of {PREPROCESS_ROWS:,}": lambda lib, path: blocks(lib)}
        times = {(step, name): [] for step in steps for name in stores}
        for _ in range(args.repeats):
            for step, fn in steps.items():
                for name, path in stores.items():
                    start = time.perf_counter()
                    fn(libs[name], path)
                    times[step, name].append(time.perf_counter() - start)
        start = time.perf_counter()
        chunks = libs["verified"].check_chunks(decode_from=0)
        verify = time.perf_counter() - start
        print(f"N = {n:,} x {bands} float32 ({mb:,.0f} MB); write_library {written:.1f} s; medians of "
              f"{args.repeats}, the two stores alternating; load {os.getloadavg()[0]:.1f} at the end")
        print("| step | before: s | before: MB/s | verified: s | verified: MB/s | verified / before |")
        print("|---|---:|---:|---:|---:|---:|")
        for step in steps:
            before, after = (statistics.median(times[step, name]) for name in stores)
            rate = (lambda s: f"{mb / s:,.0f}") if "spectra" in step else (lambda s: "")
            print(f"| {step} | {before:.3f} | {rate(before)} | {after:.3f} | {rate(after)} | {after / before:.2f} |")
        print(f"| check_chunks(decode_from=0), {chunks:,} chunks (dtl info --verify) | | | {verify:.2f} | "
              f"{mb / verify:,.0f} | |")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
