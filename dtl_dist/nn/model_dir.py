"""A trained 1D-CNN fold ensemble as a self-contained model directory (paper section 2.3.1).

The 10 fold models of a 1D-CNN trial together are the model: a prediction is the mean of the fold
models' predictions. The directory (:mod:`dtl_dist.library.model_files`) holds the weights, batch-norm
buffers and scaling of every fold model in ``model.safetensors`` (keys ``fold<i>.<name>``) and the CNN config,
n_bands, number of folds, fold RMSEs and training settings in ``model.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dtl_dist.errors import UserInputError
from dtl_dist.library.model_files import SpectraInput, read_model_files, write_model_files
from dtl_dist.nn.builder import CNNConfig, build_cnn

FORMAT = "dtl-dist/cnn-fold-ensemble"


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
    preprocessing : step names applied to ``input_units`` spectra before the CNN (e.g. ``("snv",)``).
    fold_rmse : validation RMSE of each fold model (recorded, not used to predict).
    training : training settings to record (optimiser, learning rate, epochs, ...).
    provenance : free-form record of where the model came from.
    """
    if not fold_states:
        raise UserInputError("a model directory needs at least one fold model")
    n_bands = int(np.asarray(wavelengths).size)
    build_cnn(cnn_config, n_bands).load_state_dict(fold_states[0])  # shapes match the config
    arrays = {f"fold{i}.{name}": value for i, state in enumerate(fold_states) for name, value in state.items()}
    info = {"cnn_config": cnn_config.to_dict(), "n_bands": n_bands, "n_folds": len(fold_states),
            "fold_rmse": None if fold_rmse is None else [float(r) for r in fold_rmse], "training": training or {}}
    return write_model_files(path, FORMAT, arrays, info, wavelengths=wavelengths, preprocessing=preprocessing,
                             input_units=input_units, provenance=provenance, overwrite=overwrite)


class SavedModel(SpectraInput):
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

    @torch.no_grad()
    def predict_folds(self, X) -> np.ndarray:
        """Predictions of every fold model, shape ``(n_folds, N)``."""
        x = torch.as_tensor(self.preprocess(X), dtype=torch.float32)
        return np.stack([model(x).numpy() for model in self.fold_models]).astype(np.float64)

    def predict(self, X) -> np.ndarray:
        """Ensemble prediction: the mean of the fold models' predictions, shape ``(N,)``."""
        return self.predict_folds(X).mean(axis=0)


def load_model(path) -> SavedModel:
    """Load a model directory written by :func:`save_model` (no Ray needed).

    Examples
    --------
    >>> model = load_model("runs/tune/model")        # doctest: +SKIP
    >>> soc = model.predict(absorbance_spectra)       # doctest: +SKIP
    """
    files = read_model_files(path, (FORMAT,))
    info = files.info
    config = CNNConfig.from_dict(info["cnn_config"])
    models = []
    for i in range(info["n_folds"]):
        prefix = f"fold{i}."
        model = build_cnn(config, info["n_bands"])
        model.load_state_dict({k[len(prefix):]: v for k, v in files.arrays.items() if k.startswith(prefix)})
        models.append(model.eval())
    return SavedModel(config, models, files.wavelengths, files.input_units, files.preprocessing,
                      info.get("fold_rmse"), info.get("training", {}), files.provenance)
