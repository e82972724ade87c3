"""A trained fold ensemble as a self-contained model directory (paper section 2.3.1).

The 10 fold models of a 1D-CNN trial together are the model: a prediction is the mean of the fold
models' predictions. A model directory holds everything needed to predict, and loads without Ray::

    model.safetensors     weights and batch-norm buffers of every fold model (keys ``fold<i>.<name>``)
    model.json            CNN config, n_bands, number of folds, fold RMSEs, training settings
    wavelengths.json      the wavelength grid (nm) the spectra must be on
    preprocessing.json    input units and the preprocessing steps applied before the CNN (e.g. SNV)
    provenance.json       where the model came from (data, search, time, versions)

The directory is written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from dtl_dist.errors import UserInputError
from dtl_dist.library.atomic import atomic_path
from dtl_dist.nn.builder import CNNConfig, build_cnn
from dtl_dist.spectra.grid import same_grid, validate_grid
from dtl_dist.spectra.preprocess import SNV

FORMAT = "dtl-dist/cnn-fold-ensemble"
PREPROCESSING_STEPS = {"snv": SNV}
"""Preprocessing step names a model directory may list, and their transformers."""


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_plain) + "\n")


def _plain(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return str(obj)


def save_model(path, cnn_config: CNNConfig, fold_states: list[dict], *, wavelengths, preprocessing=("snv",),
               input_units: str = "absorbance", fold_rmse=None, training: dict | None = None,
               provenance: dict | None = None, overwrite: bool = False) -> Path:
    """Write a fold ensemble as a model directory (atomically).

    Parameters
    ----------
    path : the directory to create.
    cnn_config : architecture of every fold model.
    fold_states : one ``state_dict`` per fold model.
    wavelengths : the grid (nm) of the spectra the models were trained on.
    preprocessing : step names applied to ``input_units`` spectra before the CNN (see ``PREPROCESSING_STEPS``).
    fold_rmse : validation RMSE of each fold model (recorded, not used to predict).
    training : training settings to record (optimiser, learning rate, epochs, ...).
    provenance : free-form record of where the model came from.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserInputError(f"{path}: already exists (use --overwrite to replace it)")
    unknown = [s for s in preprocessing if s not in PREPROCESSING_STEPS]
    if unknown:
        raise UserInputError(f"preprocessing {unknown}: expected steps among {sorted(PREPROCESSING_STEPS)}")
    if not fold_states:
        raise UserInputError("a model directory needs at least one fold model")
    wavelengths = validate_grid(wavelengths)
    build_cnn(cnn_config, int(wavelengths.size)).load_state_dict(fold_states[0])  # shapes match the config
    tensors = {f"fold{i}.{name}": value.detach().cpu().contiguous()
               for i, state in enumerate(fold_states) for name, value in state.items()}
    with atomic_path(path) as tmp:
        tmp = Path(tmp)
        tmp.mkdir()
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
        _write_json(tmp / "model.json", {
            "format": FORMAT, "cnn_config": cnn_config.to_dict(), "n_bands": int(wavelengths.size),
            "n_folds": len(fold_states), "fold_rmse": None if fold_rmse is None else [float(r) for r in fold_rmse],
            "training": training or {},
        })
        _write_json(tmp / "wavelengths.json", {"unit": "nm", "wavelengths": wavelengths.tolist()})
        _write_json(tmp / "preprocessing.json", {"input_units": input_units, "steps": list(preprocessing)})
        _write_json(tmp / "provenance.json", provenance or {})
    return path


class SavedModel:
    """A loaded model directory: the fold models, their grid and preprocessing.

    Attributes
    ----------
    cnn_config : CNNConfig
    fold_models : list of CNN, in evaluation mode
    wavelengths : ndarray of float, nm
    input_units : str
    preprocessing : list of str
    fold_rmse : list of float or None
    training, provenance : dict
    """

    def __init__(self, cnn_config, fold_models, wavelengths, input_units, preprocessing, fold_rmse, training,
                 provenance):
        self.cnn_config = cnn_config
        self.fold_models = fold_models
        self.wavelengths = wavelengths
        self.input_units = input_units
        self.preprocessing = preprocessing
        self.fold_rmse = fold_rmse
        self.training = training
        self.provenance = provenance

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

    @torch.no_grad()
    def predict_folds(self, X) -> np.ndarray:
        """Predictions of every fold model, shape ``(n_folds, N)``."""
        x = torch.as_tensor(self.preprocess(X), dtype=torch.float32)
        return np.stack([model(x).numpy() for model in self.fold_models]).astype(np.float64)

    def predict(self, X) -> np.ndarray:
        """Ensemble prediction: the mean of the fold models' predictions, shape ``(N,)``."""
        return self.predict_folds(X).mean(axis=0)

    def check_grid(self, wavelengths) -> None:
        """Raise UserInputError unless ``wavelengths`` is the model's grid."""
        if not same_grid(wavelengths, self.wavelengths):
            raise UserInputError(
                f"wavelength grid ({len(wavelengths)} bands) differs from the model's "
                f"({self.wavelengths.size} bands, {self.wavelengths[0]:g}-{self.wavelengths[-1]:g} nm)"
            )


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserInputError(f"{path.parent}: not a model directory (missing {path.name})") from None
    except json.JSONDecodeError as exc:
        raise UserInputError(f"{path}: unreadable JSON ({exc})") from None


def load_model(path) -> SavedModel:
    """Load a model directory written by :func:`save_model` (no Ray needed).

    Examples
    --------
    >>> model = load_model("runs/tune/model")        # doctest: +SKIP
    >>> soc = model.predict(absorbance_spectra)       # doctest: +SKIP
    """
    path = Path(path)
    info = _read_json(path / "model.json")
    if info.get("format") != FORMAT:
        raise UserInputError(f"{path}: not a dtl-dist model directory (format={info.get('format')!r})")
    grid = _read_json(path / "wavelengths.json")
    prep = _read_json(path / "preprocessing.json")
    provenance = _read_json(path / "provenance.json")
    try:
        tensors = load_file(str(path / "model.safetensors"))
    except (FileNotFoundError, OSError) as exc:
        raise UserInputError(f"{path}: cannot read model.safetensors ({exc})") from None
    config = CNNConfig.from_dict(info["cnn_config"])
    models = []
    for i in range(info["n_folds"]):
        prefix = f"fold{i}."
        model = build_cnn(config, info["n_bands"])
        model.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        models.append(model.eval())
    return SavedModel(config, models, np.asarray(grid["wavelengths"], dtype=np.float64), prep["input_units"],
                      list(prep["steps"]), info.get("fold_rmse"), info.get("training", {}), provenance)
