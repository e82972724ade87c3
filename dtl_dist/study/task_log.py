"""``RUN/tasks.jsonl``: where every CNN task of a study ran (one JSON line per finished Ray task).

Each line is the record the task itself returned (:func:`dtl_dist.engines.ray.run_task`): the stage, the
function and block, the Ray node id, the GPU ids Ray assigned (``ray.get_gpu_ids()``), the torch device the
task chose, its process id and its start and end times (Unix seconds). It shows how a study's trials and
transfers were packed onto a cluster's GPUs (``--gpus-per-trial``) and how long each took.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable

TASKS_FILE = "tasks.jsonl"


class TaskLog:
    """Appends task records to ``path``, one line each, from the study's stage threads."""

    def __init__(self, path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def for_stage(self, stage: str) -> Callable[[dict], None]:
        """The ``on_task`` callback of stage ``stage``'s map."""
        return lambda record: self.write({"stage": stage, **record})

    def write(self, record: dict) -> None:
        with self._lock, self.path.open("a") as out:
            out.write(json.dumps(record, sort_keys=True) + "\n")


def read_tasks(run_dir) -> list[dict]:
    """The task records of a study run (empty when no task ran on Ray)."""
    path = Path(run_dir) / TASKS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
