"""bench_search_scaling: strong scaling of the 1D-CNN search (paper section 2.3.1) over 1, 2 and 4 Ray nodes started
on this machine's loopback (issue 10).

For each node count a Ray cluster is started as a job script starts it (``ray start --head --block`` on
127.0.0.11, ``ray start --address`` on 127.0.0.12, ..., each node with ``--cpus-per-node`` CPUs and its own
temporary folder), this process joins it and runs the same fixed search: ``--trials`` copies of the study's first
small CNN (:data:`dtl_dist.nn.space.SMALL_DATA_STARTERS`, no early stopping, ``--max-epochs`` epochs, ``--folds``
folds) on a synthetic training set of ``--samples`` spectra (the k + n localised data of a study), one trial per
Ray task with one CPU, as ``dtl study`` runs its searches (after a one-epoch warm-up that starts every node's
worker processes, as a long search amortises them). Printed per node count: wall time of the search, trials
per hour, speed-up and efficiency against one node, and trial seconds per core (the rate behind the 400-trial
estimate in benchmarks/README.md). The clusters' processes are ended by process id when each run ends.

Usage: python benchmarks/bench_search_scaling.py [--nodes 1 2 4] [--cpus-per-node 1] [--trials 8] [--max-epochs 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster" / "local"))
from ray_nodes import LoopbackRay  # noqa: E402  (sets Ray's cluster mode: several nodes on one machine)

from dtl_dist.engines import ray as ray_engine  # noqa: E402
from dtl_dist.library.synthetic import make_library  # noqa: E402
from dtl_dist.nn.search import CandidateRunner, TuneData, tune  # noqa: E402
from dtl_dist.nn.space import SMALL_DATA_STARTERS, default_space  # noqa: E402
from dtl_dist.spectra.preprocess import SNV  # noqa: E402


def search(data: TuneData, trials: int, max_epochs: int, folder: Path) -> float:
    """Wall seconds of the fixed search on the joined Ray cluster."""
    shutil.rmtree(folder, ignore_errors=True)
    runner = CandidateRunner(folder, map_blocks=ray_engine.map_blocks(num_cpus=1),
                             starters=[dict(SMALL_DATA_STARTERS[0], batch_size=32)] * trials, chunk=trials)
    start = time.perf_counter()
    result = tune(data, default_space(), trials=trials, runner=runner, seed=0, mode="auto", max_epochs=max_epochs)
    wall = time.perf_counter() - start
    assert len(result.complete) == trials, "a trial did not complete"
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--samples", type=int, default=130, help="training spectra (k + n = 130 in the paper)")
    args = parser.parse_args()
    lib = make_library(args.samples, seed=3)
    data = TuneData.make(SNV().fit_transform(lib.spectra), lib.soc, folds=args.folds, seed=0,
                         wavelengths=lib.wavelengths)
    print(f"{os.cpu_count()} cores; search: {args.trials} trials x {args.folds} folds x {args.max_epochs} epochs on "
          f"{args.samples} x {data.X.shape[1]} spectra; {args.cpus_per_node} CPU(s) per node; load average "
          f"{os.getloadavg()[0]:.2f}")
    print("| Ray nodes | CPUs | wall s | trials/h | speed-up | efficiency | trial s x CPUs |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    first = None
    with tempfile.TemporaryDirectory() as tmp:
        for nodes in args.nodes:
            with LoopbackRay(nodes, args.cpus_per_node) as cluster:
                ray_engine.init(cluster.address)
                try:  # a warm-up starts every node's worker processes (torch imports) before the clock
                    search(data, nodes * args.cpus_per_node, 1, Path(tmp) / f"warmup{nodes}")
                    wall = search(data, args.trials, args.max_epochs, Path(tmp) / f"search{nodes}")
                finally:
                    ray_engine.shutdown()
            cpus = nodes * args.cpus_per_node
            first = first or (nodes, wall)
            speedup = first[1] / wall
            print(f"| {nodes} | {cpus} | {wall:.1f} | {3600 * args.trials / wall:.0f} | {speedup:.2f} | "
                  f"{speedup * first[0] / nodes:.2f} | {wall * cpus / args.trials:.1f} |", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
