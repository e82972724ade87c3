"""PLS and MBL baselines as self-contained model directories (:mod:`dtl_dist.library.model_files`).

``dtl-dist/pls``: one PLSR model (centring mean, regression coefficients, intercept, components).
``dtl-dist/mbl``: the memory-based learner's reference set, global projection and neighbourhood size
(:mod:`dtl_dist.linear.mbl`); it fits its local PLS models when it predicts.
"""

from __future__ import annotations

import numpy as np

from dtl_dist.library.model_files import SpectraInput, read_model_files, write_model_files
from dtl_dist.linear.mbl import MBL

PLS_FORMAT = "dtl-dist/pls"
MBL_FORMAT = "dtl-dist/mbl"


class SavedPLS(SpectraInput):
    """A loaded PLSR model: ``predict(X) = (preprocess(X) - x_mean) @ coef + intercept``."""

    def __init__(self, files):
        self.wavelengths, self.input_units, self.preprocessing = files.wavelengths, files.input_units, files.preprocessing
        self.provenance, self.info = files.provenance, files.info
        self.x_mean = files.arrays["x_mean"].double().numpy()
        self.coef = files.arrays["coef"].double().numpy()
        self.intercept = float(files.arrays["intercept"])

    def predict(self, X) -> np.ndarray:
        return (self.preprocess(X) - self.x_mean) @ self.coef + self.intercept


def save_pls(path, *, x_mean, coef, intercept: float, ncomp: int, wavelengths, training: dict | None = None,
             provenance: dict | None = None, preprocessing=("snv",), overwrite: bool = False):
    """Write a PLSR model directory."""
    arrays = {"x_mean": np.asarray(x_mean, dtype=np.float64), "coef": np.asarray(coef, dtype=np.float64),
              "intercept": np.asarray(float(intercept))}
    return write_model_files(path, PLS_FORMAT, arrays, {"ncomp": int(ncomp), "training": training or {}},
                             wavelengths=wavelengths, preprocessing=preprocessing, provenance=provenance,
                             overwrite=overwrite)


class SavedMBL(SpectraInput):
    """A loaded memory-based learner: predicts each spectrum with a local PLS on its nearest reference spectra."""

    def __init__(self, files):
        self.wavelengths, self.input_units, self.preprocessing = files.wavelengths, files.input_units, files.preprocessing
        self.provenance, self.info = files.provenance, files.info
        a = {name: value.double().numpy() for name, value in files.arrays.items()}
        self.mbl = MBL(int(files.info["k"]), min_ncomp=int(files.info["min_ncomp"]),
                       max_ncomp=int(files.info["max_ncomp"]))
        self.mbl.X_, self.mbl.y_ = a["reference_X"], a["reference_y"]
        self.mbl.x_mean_, self.mbl.rotations_, self.mbl.score_scale_ = a["x_mean"], a["rotations"], a["score_scale"]

    def predict(self, X) -> np.ndarray:
        return self.mbl.predict(self.preprocess(X))


def save_mbl(path, mbl: MBL, *, wavelengths, training: dict | None = None, provenance: dict | None = None,
             preprocessing=("snv",), overwrite: bool = False):
    """Write a fitted :class:`~dtl_dist.linear.mbl.MBL` (with its reference set) as a model directory."""
    arrays = {"reference_X": mbl.X_, "reference_y": mbl.y_, "x_mean": mbl.x_mean_, "rotations": mbl.rotations_,
              "score_scale": mbl.score_scale_}
    info = {"k": int(mbl.k), "min_ncomp": int(mbl.min_ncomp), "max_ncomp": int(mbl.max_ncomp),
            "training": training or {}}
    return write_model_files(path, MBL_FORMAT, arrays, info, wavelengths=wavelengths, preprocessing=preprocessing,
                             provenance=provenance, overwrite=overwrite)


def load_linear(path):
    """Load a PLS or MBL model directory."""
    files = read_model_files(path, (PLS_FORMAT, MBL_FORMAT))
    return SavedPLS(files) if files.info["format"] == PLS_FORMAT else SavedMBL(files)
