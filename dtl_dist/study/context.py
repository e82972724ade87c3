"""What every stage of a study shares: options, data, run directory and the engines' map functions."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dtl_dist.library.atomic import atomic_path
from dtl_dist.mapping import serial_map
from dtl_dist.study.config import StudyConfig
from dtl_dist.study.data import StudyData
from dtl_dist.study.designs import assemble

MODELS_DIR = "models"


@dataclass
class StudyContext:
    """Shared by the stages.

    Attributes
    ----------
    config, data, out : the options, the data and the run directory.
    task_map : runs CNN trials and transfer candidates (Ray tasks, or in-process).
    stage_map : ``stage_map(stage name) -> task_map`` whose tasks are recorded under that stage (RUN/tasks.jsonl);
        None: ``task_map`` for every stage.
    rslocal_engine : holds RS-LOCAL's groups (Dask actors, or in-process; None: in-process).
    echo : progress lines.
    """

    config: StudyConfig
    data: StudyData
    out: Path
    task_map: Callable = serial_map
    rslocal_engine: object | None = None
    echo: Callable[[str], None] = print
    stage_map: Callable[[str], Callable] | None = None

    def tasks(self, stage: str) -> Callable:
        """The map that runs stage ``stage``'s CNN trials and transfer tasks."""
        return self.task_map if self.stage_map is None else self.stage_map(stage)

    def model_dir(self, name: str) -> Path:
        return self.out / MODELS_DIR / name

    def keep_model(self, name: str, source: Path) -> Path:
        """Copy a model directory to ``RUN/models/NAME`` (atomically, replacing an older one)."""
        with atomic_path(self.model_dir(name)) as tmp:
            shutil.copytree(source, tmp)
        return self.model_dir(name)

    def result(self, design, predictions: list, model, n_train: int, **details) -> dict:
        """A model stage's summary: out-of-fold predictions of the n labelled samples (from each outer split's
        predictions), the saved model's predictions of local_test from its absorbance, training size, details."""
        cv = assemble(self.data, design, predictions)
        test = model.predict(self.data.test_absorbance) if len(self.data.test_ids) else np.empty(0)
        return {"cv_predictions": cv.tolist(), "test_predictions": np.asarray(test, dtype=float).tolist(),
                "n_train": int(n_train), **details}
