"""Kennard-Stone selection of n = 30 (paper section 2.1): time and peak memory against N, and the kennard-stone
package (which holds the full N x N distance matrix) where it fits.

Run: ``python benchmarks/bench_kennard_stone.py``
"""

import time
import tracemalloc

import kennard_stone as ks_package
import numpy as np

from dtl_dist.select import kennard_stone

BANDS, N_SELECT = 211, 30


def measure(fn):
    """Seconds of one run, then peak traced memory (MiB) of a second run (tracemalloc slows Python loops)."""
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def main():
    rng = np.random.default_rng(0)
    print(f"{'N':>7} {'bands':>5} {'dtl_dist s':>10} {'peak MiB':>8} {'package s':>9} {'peak MiB':>8}")
    for N in (1_000, 2_000, 10_000, 30_000):
        X = rng.normal(size=(N, BANDS))
        ours = measure(lambda: kennard_stone(X, N_SELECT))
        theirs = measure(lambda: ks_package.train_test_split(X, train_size=N_SELECT)) if N <= 2_000 else None
        cells = f"{theirs[0]:9.2f} {theirs[1]:8.0f}" if theirs else f"{'-':>9} {'-':>8}"
        print(f"{N:>7} {BANDS:>5} {ours[0]:10.2f} {ours[1]:8.0f} {cells}")


if __name__ == "__main__":
    main()
