"""An ensemble of a study's models as a self-contained model directory (:mod:`dtl_dist.library.model_files`).

``dtl-dist/ensemble``: the members' own model directories under ``members/NAME/`` (1D-CNN fold ensembles, PLS,
MBL) and their weights; it predicts SOC as the weighted sum of the members' predictions from the same absorbance
spectra (each member applies its own preprocessing), so ``dtl predict`` serves it like any model.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from dtl_dist.library.atomic import atomic_path
from dtl_dist.library.model_files import read_model_files, write_model_files

ENSEMBLE_FORMAT = "dtl-dist/ensemble"
MEMBERS = "members"


class SavedEnsemble:
    """A loaded ensemble: ``predict(X) = sum_m weight_m * member_m.predict(X)``."""

    def __init__(self, files, members: list):
        self.wavelengths, self.input_units, self.preprocessing = files.wavelengths, files.input_units, files.preprocessing
        self.provenance, self.info = files.provenance, files.info
        self.weights = files.arrays["weights"].double().numpy()
        self.members = members
        if self.weights.shape != (len(members),):
            raise ValueError(f"{self.weights.size} weights for {len(members)} members")

    def predict(self, X) -> np.ndarray:
        return sum(w * member.predict(X) for w, member in zip(self.weights, self.members))


def save_ensemble(path, members: dict, weights, *, rule: str, wavelengths, provenance: dict | None = None,
                  overwrite: bool = False) -> Path:
    """Write an ensemble directory: ``members`` (name -> model directory, copied in) with ``weights``."""
    weights = np.asarray(weights, dtype=np.float64)
    with atomic_path(Path(path)) as tmp:
        write_model_files(tmp, ENSEMBLE_FORMAT, {"weights": weights}, {"members": list(members), "rule": rule},
                          wavelengths=wavelengths, preprocessing=(), provenance=provenance)
        for name, source in members.items():
            shutil.copytree(source, Path(tmp) / MEMBERS / name)
    return Path(path)


def load_ensemble(path, load_member: Callable | None = None) -> SavedEnsemble:
    """Load an ensemble directory; ``load_member(dir)`` loads each member (default: any kind a study saves)."""
    if load_member is None:
        from dtl_dist.study.predict import load_any as load_member
    files = read_model_files(path, (ENSEMBLE_FORMAT,))
    members = [load_member(Path(path) / MEMBERS / name) for name in files.info["members"]]
    return SavedEnsemble(files, members)
