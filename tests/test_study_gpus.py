"""The study's CNN stages on GPUs, proven without one (issue 19): two real Ray nodes with 2 logical GPUs each
(``ray start --num-gpus 2`` on this CPU machine) run the searches and transfers with ``--gpus-per-trial 0.25``.
Every task records the GPU ids Ray assigned it, its node and its start/end times (RUN/tasks.jsonl, written
from what the tasks returned); the packing is checked from those records, and the models equal a CPU-only
run's (torch has no CUDA here, so the tasks given a GPU chose the CPU)."""

from __future__ import annotations

import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import synthetic_stores
from dtl_dist.engines import ray as ray_engine
from dtl_dist.errors import UserInputError
from dtl_dist.study.config import StudyConfig
from dtl_dist.study.run import run_study
from dtl_dist.study.task_log import read_tasks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster" / "local"))
from ray_nodes import LoopbackRay  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.heavy]
SMALL = dict(n_local=15, k=20, trials=4, cv_folds=2, inner_folds=2, subset=20, b=4, ncomp=3, max_epochs=3,
             workers=0)


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, step in events:  # an end at the same time as a start comes first
        running += step
        most = max(most, running)
    return most


def _cnn_outcome(run: Path) -> dict:
    """What the CNN stages produced: each stage's summary (held-out and test predictions, choices)."""
    out = {}
    for stage in ("Local", "Global", "DTL-I_g", "DTL-R_g", "DTL-IR_g"):
        summary = json.loads((run / "stages" / stage / "stage.json").read_text())["summary"]
        out[stage] = {k: summary[k] for k in ("cv_predictions", "test_predictions", "per_split")}
    return out


def test_cnn_stages_pack_four_trials_per_logical_gpu_over_two_nodes(tmp_path):
    stores = synthetic_stores(tmp_path, 400, 60)
    base = dict(library=str(stores / "lib.zarr"), site=str(stores / "site.zarr"), **SMALL)
    gpu_run, cpu_run = tmp_path / "gpu", tmp_path / "cpu"
    run_study(StudyConfig(out=str(gpu_run), only=("rslocal",), **base), echo=lambda line: None)  # in-process
    shutil.copytree(gpu_run, cpu_run)
    with LoopbackRay(nodes=2, cpus=5, gpus=2) as cluster:
        ray_engine.init(cluster.address)
        try:
            with pytest.raises(UserInputError, match="at most 2 on one node"):  # 4 GPUs, but not on one node
                ray_engine.trial_resources(1, 3)
            lines = []
            run_study(StudyConfig(out=str(gpu_run), resume=True, only=("search", "transfer"), gpus_per_trial=0.25,
                                  **base), echo=lines.append)
            run_study(StudyConfig(out=str(cpu_run), resume=True, only=("search", "transfer"), **base),
                      echo=lambda line: None)
        finally:
            ray_engine.shutdown()
    tasks = read_tasks(gpu_run)
    assert {t["stage"] for t in tasks} == {"Local", "Global", "DTL-I_g", "DTL-R_g", "DTL-IR_g"}
    assert all(len(t["gpu_ids"]) == 1 and t["device"] == "cpu" for t in tasks)  # a GPU each; no CUDA in torch
    per_gpu = defaultdict(list)
    for t in tasks:
        per_gpu[t["node"], t["gpu_ids"][0]].append((t["start"], t["end"]))
    assert len(per_gpu) == 4, sorted(per_gpu)  # both logical GPUs of both nodes
    assert max(_most_at_once(spans) for spans in per_gpu.values()) <= 4
    for stage in ("Local", "Global", "DTL-I_g"):  # each search's trials ran on both nodes
        assert len({t["node"] for t in tasks if t["stage"] == stage}) == 2, stage
    transfer = [t for t in tasks if t["stage"] == "DTL-R_g"]
    assert len(transfer) > 3 and _most_at_once([(t["start"], t["end"]) for t in transfer]) > 1  # folds in parallel
    cpu_tasks = read_tasks(cpu_run)
    assert len(cpu_tasks) == len(tasks) and all(t["gpu_ids"] == [] for t in cpu_tasks)
    assert _cnn_outcome(gpu_run) == _cnn_outcome(cpu_run)
