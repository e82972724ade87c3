"""The files of a model directory: what every saved model of a study shares, whatever made it.

A model directory predicts SOC from spectra as ``dtl ingest`` stores them (absorbance on a grid) and loads
without Ray or Dask::

    model.safetensors     the model's arrays (weights, coefficients, reference spectra, ...)
    model.json            ``format`` (which kind of model) and its own settings
    wavelengths.json      the grid (nm) the spectra must be on
    preprocessing.json    input units and the preprocessing steps applied before the model (e.g. SNV)
    provenance.json       where the model came from (data, study, time, versions)

The directory is written to a temporary sibling and renamed into place. The kinds (:mod:`dtl_dist.nn.model_dir`
for 1D-CNN fold ensembles, :mod:`dtl_dist.linear.saved` for PLS and MBL) build on :func:`write_model_files` and
:func:`read_model_files`.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from dtl_dist import __version__
from dtl_dist.errors import UserInputError
from dtl_dist.library.atomic import atomic_path
from dtl_dist.spectra.grid import same_grid, validate_grid
from dtl_dist.spectra.preprocess import SNV

PREPROCESSING_STEPS = {"snv": SNV}
"""Preprocessing step names a model directory may list, and their transformers."""
FORMAT_VERSION = 1
"""Version of the model-directory layout this dtl-dist writes and reads."""


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_plain) + "\n")


def _plain(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return str(obj)


def write_model_files(path, format: str, arrays: dict, info: dict, *, wavelengths, preprocessing=("snv",),
                      input_units: str = "absorbance", provenance: dict | None = None,
                      overwrite: bool = False) -> Path:
    """Write a model directory (atomically): ``arrays`` (name -> tensor or ndarray) and ``info`` (JSON-safe).

    Raises
    ------
    UserInputError
        When ``path`` exists (unless ``overwrite``) or a preprocessing step is unknown.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserInputError(f"{path}: already exists (use --overwrite to replace it)")
    unknown = [s for s in preprocessing if s not in PREPROCESSING_STEPS]
    if unknown:
        raise UserInputError(f"preprocessing {unknown}: expected steps among {sorted(PREPROCESSING_STEPS)}")
    wavelengths = validate_grid(wavelengths)
    tensors = {name: torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value).detach().cpu()
               .contiguous() for name, value in arrays.items()}
    with atomic_path(path) as tmp:
        tmp = Path(tmp)
        tmp.mkdir()
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": format})
        _write_json(tmp / "model.json", {"format": format, "format_version": FORMAT_VERSION,
                                         "dtl_dist_version": __version__, **info})
        _write_json(tmp / "wavelengths.json", {"unit": "nm", "wavelengths": wavelengths.tolist()})
        _write_json(tmp / "preprocessing.json", {"input_units": input_units, "steps": list(preprocessing)})
        _write_json(tmp / "provenance.json", provenance or {})
    return path


@dataclass
class ModelFiles:
    """What :func:`read_model_files` read: the model's settings, arrays, grid, preprocessing and provenance."""

    path: Path
    info: dict
    arrays: dict
    wavelengths: np.ndarray
    input_units: str
    preprocessing: list = field(default_factory=list)
    provenance: dict = field(default_factory=dict)


def _read_json(path: Path, kind=dict):
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserInputError(f"{path.parent}: not a model directory (missing {path.name})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(value, kind):
        raise UserInputError(f"{path}: holds a JSON {type(value).__name__}; expected an object")
    return value


@contextlib.contextmanager
def files_agree(path):
    """Turn an error raised while a model is built from its files (a missing key, a shape, a type) into a
    UserInputError: the files of the directory at ``path`` disagree, e.g. after a hand edit."""
    try:
        yield
    except UserInputError:
        raise
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as exc:
        said = " ".join(str(exc).split())[:200]
        raise UserInputError(f"{path}: the model directory's files disagree ({type(exc).__name__}: {said}); "
                             "expected model.safetensors, model.json, wavelengths.json and preprocessing.json "
                             "as dtl-dist wrote them") from None


def model_format(path) -> str:
    """The ``format`` a model directory declares."""
    return str(_read_json(Path(path) / "model.json").get("format"))


def read_model_files(path, formats) -> ModelFiles:
    """Read a model directory whose format is one of ``formats``.

    Raises
    ------
    UserInputError
        For a missing or foreign directory, another format, or unreadable files.
    """
    path = Path(path)
    info = _read_json(path / "model.json")
    if info.get("format") not in formats:
        raise UserInputError(f"{path}: not a dtl-dist model directory of kind {' or '.join(formats)} "
                             f"(format={info.get('format')!r})")
    if info.get("format_version") != FORMAT_VERSION:
        raise UserInputError(f"{path}: model directory of format version {info.get('format_version')!r} (written by "
                             f"dtl-dist {info.get('dtl_dist_version', 'before 0.2')}); this dtl-dist reads version "
                             f"{FORMAT_VERSION}: retrain the model or use the dtl-dist that wrote it")
    grid = _read_json(path / "wavelengths.json")
    prep = _read_json(path / "preprocessing.json")
    provenance = _read_json(path / "provenance.json")
    try:
        arrays = load_file(str(path / "model.safetensors"))
    except Exception as exc:  # safetensors raises its own SafetensorError, OSError or FileNotFoundError
        raise UserInputError(f"{path}: cannot read model.safetensors ({type(exc).__name__}: {exc})") from None
    with files_agree(path):
        wavelengths = validate_grid(np.asarray(grid["wavelengths"], dtype=np.float64),
                                    where=f"{path / 'wavelengths.json'}")
        steps, units = prep["steps"], prep["input_units"]
        if not isinstance(steps, list) or any(step not in PREPROCESSING_STEPS for step in steps) \
                or not isinstance(units, str):
            raise UserInputError(f"{path / 'preprocessing.json'}: input_units {units!r}, steps {steps!r}; expected "
                                 f"a unit name and steps among {sorted(PREPROCESSING_STEPS)}")
    return ModelFiles(path, info, arrays, wavelengths, units, list(steps), provenance)


class SpectraInput:
    """What a loaded model expects of its input spectra: the grid, the units and the preprocessing steps."""

    wavelengths: np.ndarray
    input_units: str
    preprocessing: list

    def preprocess(self, X) -> np.ndarray:
        """Apply the model's preprocessing to spectra in ``input_units`` on the model's grid."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.wavelengths.size:
            raise UserInputError(
                f"spectra: expected shape (N, {self.wavelengths.size}) on the model's grid "
                f"({self.wavelengths[0]:g}-{self.wavelengths[-1]:g} nm), got {X.shape}"
            )
        for step in self.preprocessing:
            X = PREPROCESSING_STEPS[step]().fit_transform(X)
        return X

    def check_grid(self, wavelengths) -> None:
        """Raise UserInputError unless ``wavelengths`` is the model's grid."""
        if not same_grid(wavelengths, self.wavelengths):
            raise UserInputError(
                f"wavelength grid ({len(wavelengths)} bands) differs from the model's "
                f"({self.wavelengths.size} bands, {self.wavelengths[0]:g}-{self.wavelengths[-1]:g} nm)"
            )
