"""``dtl predict``: SOC estimates and prediction intervals for new spectra from a study's saved model.

New spectra are read, checked and converted exactly as ``dtl ingest`` converts a library (declared units ->
absorbance log10(1/R), linear resampling onto the model's grid, never extrapolating), block by block; the
model applies its own preprocessing (SNV) and predicts; the interval at ``level`` comes from the model's
calibration residuals (:mod:`dtl_dist.study.intervals`). ``--model RUN`` (a study's run directory) uses the
model the study recommended.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dtl_dist.errors import UserInputError
from dtl_dist.library.atomic import atomic_path
from dtl_dist.library.ingest import Source, read_spectra
from dtl_dist.library.model_files import files_agree, model_format
from dtl_dist.linear.saved import load_linear
from dtl_dist.nn.model_dir import FORMAT as CNN_FORMAT
from dtl_dist.nn.model_dir import load_model
from dtl_dist.study.ensemble_model import ENSEMBLE_FORMAT, load_ensemble
from dtl_dist.study.intervals import half_width, load_calibration

CHUNK_ROWS = 5000


def load_any(path):
    """Load a model directory of any kind a study saves (1D-CNN fold ensemble, PLS, MBL or an ensemble of
    those) and predict one made-up spectrum on its grid, so that files which disagree (weights,
    wavelengths.json, model.json) are a UserInputError here rather than a failure halfway through a prediction."""
    with files_agree(path):
        kind = model_format(path)
        if kind == ENSEMBLE_FORMAT:
            model = load_ensemble(path, load_any)
        else:
            model = load_model(path) if kind == CNN_FORMAT else load_linear(path)
        model.predict(np.linspace(0.2, 1.0, model.wavelengths.size)[None])
    return model


def resolve_model(path) -> Path:
    """The model directory ``path`` names: a model directory itself, or a study's recommended model."""
    path = Path(path)
    if (path / "model.json").is_file():
        return path
    metrics = path / "metrics.csv"
    if metrics.is_file():
        table = pd.read_csv(metrics, keep_default_na=False)
        chosen = table.loc[table.model == "recommended", "recommended_model"]
        if len(chosen) == 1 and (path / "models" / chosen.item()).is_dir():
            return path / "models" / chosen.item()
    raise UserInputError(f"--model {path}: neither a model directory (model.json) nor a finished study run "
                         "(metrics.csv with a recommended model under models/)")


def predict_file(model_path, source: Source, out, *, level: float = 0.9, progress: bool = True,
                 chunk_rows: int = CHUNK_ROWS) -> dict:
    """Predict every spectrum of ``source`` with the model at ``model_path``; write ``out`` (CSV: sample_id,
    soc, soc_lo, soc_hi) atomically. Returns the model used, the rows written and the interval half-width."""
    from tqdm.auto import tqdm

    path = resolve_model(model_path)
    model = load_any(path)
    if model.input_units != "absorbance":
        raise UserInputError(f"{path}: the model expects {model.input_units} input; dtl predict feeds absorbance")
    residuals = load_calibration(path)
    if residuals is None:
        raise UserInputError(f"{path}: no calibration.json, so no prediction interval; expected the model directory "
                             "a study saved (dtl study writes each model's calibration residuals beside it)")
    width = half_width(residuals, level)
    total, blocks = read_spectra(source, model.wavelengths, block_rows=chunk_rows,
                                 grid_owner=f"the model's grid ({path.name})")
    rows = 0
    with atomic_path(Path(out)) as tmp, tqdm(total=total, unit=" spectra", desc=f"predict {path.name}",
                                             disable=not progress) as bar:
        with open(tmp, "w") as fh:
            fh.write("sample_id,soc,soc_lo,soc_hi\n")
            for ids, spectra in blocks:
                estimate = model.predict(spectra)
                frame = pd.DataFrame({"sample_id": ids, "soc": estimate, "soc_lo": estimate - width,
                                      "soc_hi": estimate + width})
                frame.to_csv(fh, header=False, index=False, float_format="%.6g")
                rows += len(ids)
                bar.update(len(ids))
    return {"model": str(path), "rows": rows, "level": level, "half_width": width}
