"""bench_study_nodes: the study's CNN stages (searches and transfers) on 1 and 2 Ray nodes, back to back (issue 19).

The main job's study (``dtl demo``'s stores: the LimeSoDa vis-NIR sites other than ``--site``, plus the Geeves NSW
library when ``DTL_DATA`` holds it; country SE; quick budget, or smaller with ``--trials``, ``--cv-folds``,
``--inner-folds``, ``--max-epochs``) first runs its RS-LOCAL and baseline stages
in-process once (the site split by Kennard-Stone, n = 30, in its store); then, for each node count, a copy of that run directory resumes with ``--only search,transfer``
on a Ray cluster of that many loopback nodes (``cluster/local/ray_nodes.py``: ``ray start`` as the job scripts
start it, ``--cpus-per-node`` CPUs each), with ``--gpus-per-trial`` (logical GPUs per node with
``--gpus-per-node``; 0: CPU tasks as the 2-core default). Printed per layout: wall time of the CNN stages, CNN
trials and transfer tasks (from RUN/tasks.jsonl), trials per hour, tasks per node, and whether the models equal
the first layout's (same seed, any layout: the same models). Worker start-up (torch imports on every node) is
part of the wall time, as it is of a study's.

Usage: DTL_DATA=/path python benchmarks/bench_study_nodes.py [--nodes 1 2] [--cpus-per-node 1] [--out DIR]
       [--trials 2 --cv-folds 2 --inner-folds 3 --max-epochs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster" / "local"))
from ray_nodes import LoopbackRay  # noqa: E402

from dtl_dist.engines import ray as ray_engine  # noqa: E402
from dtl_dist.study.config import StudyConfig  # noqa: E402
from dtl_dist.study.main_job import MainJob, stores  # noqa: E402
from dtl_dist.study.run import run_study  # noqa: E402
from dtl_dist.study.select_local import select_local  # noqa: E402
from dtl_dist.study.task_log import read_tasks  # noqa: E402

CNN_KINDS = ("search", "transfer")


def summaries(run: Path) -> dict:
    """Every CNN stage's summary (predictions, choices): equal across layouts when the models are."""
    return {p.name: json.loads((p / "stage.json").read_text())["summary"] for p in sorted((run / "stages").iterdir())
            if (p / "stage.json").is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=0, help="logical GPUs of each Ray node")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)
    parser.add_argument("--site", default="UL.120")
    parser.add_argument("--trials", type=int, default=None, help="trials per search (default: the quick budget's)")
    parser.add_argument("--cv-folds", type=int, default=5)
    parser.add_argument("--inner-folds", type=int, default=10)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/study_nodes"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    library, site = stores(MainJob(out=str(args.out), site=args.site), print)
    select_local(site, 30)  # the split in the site store: every copy of the run reads the same inputs
    base = dict(library=str(library), site=str(site), country="SE", workers=0, trials=args.trials,
                cv_folds=args.cv_folds, inner_folds=args.inner_folds, max_epochs=args.max_epochs)
    prep = args.out / "prep"
    start = time.perf_counter()
    run_study(StudyConfig(out=str(prep), only=("rslocal", "baseline"), **base), echo=lambda line: None)
    print(f"RS-LOCAL and baselines in-process: {time.perf_counter() - start:.0f} s; load average before the CNN "
          f"stages {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)", flush=True)
    rows, first = [], None
    for nodes in args.nodes:
        run = args.out / f"nodes{nodes}"
        shutil.copytree(prep, run)
        load = os.getloadavg()[0]
        with LoopbackRay(nodes, args.cpus_per_node, args.gpus_per_node) as cluster:
            ray_engine.init(cluster.address)
            try:
                start = time.perf_counter()
                run_study(StudyConfig(out=str(run), resume=True, only=CNN_KINDS, gpus_per_trial=args.gpus_per_trial,
                                      **base), echo=lambda line: None)
                wall = time.perf_counter() - start
            finally:
                ray_engine.shutdown()
        tasks = read_tasks(run)
        trials = sum(t["fn"] == "_run_candidate" for t in tasks)
        per_node = sorted(Counter(t["node"] for t in tasks).values(), reverse=True)
        outcome = summaries(run)
        first = first or outcome
        rows.append((nodes, nodes * args.cpus_per_node, wall, trials, len(tasks) - trials, 3600 * trials / wall,
                     per_node, outcome == first, load, os.getloadavg()[0]))
        print(f"{nodes} node(s): {wall:.0f} s", flush=True)
    print("| Ray nodes | CPUs | CNN stages wall s | trials | transfer tasks | trials/h | tasks per node | same models "
          "| load before / after |")
    print("|---:|---:|---:|---:|---:|---:|---|---|---|")
    for nodes, cpus, wall, trials, transfers, rate, per_node, same, before, after in rows:
        print(f"| {nodes} | {cpus} | {wall:.0f} | {trials} | {transfers} | {rate:,.0f} | {per_node} | {same} | "
              f"{before:.1f} / {after:.1f} |")


if __name__ == "__main__":
    main()
