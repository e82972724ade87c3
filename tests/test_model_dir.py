"""Model directories: a fold ensemble saved with safetensors loads without Ray and predicts the same."""

from __future__ import annotations

import numpy as np
import pytest

from dtl_dist.errors import UserInputError
from dtl_dist.nn.builder import CNNConfig, ConvBlock, FCBlock
from dtl_dist.nn.model_dir import load_model, save_model
from dtl_dist.nn.trainer import TrainConfig, cross_validate
from dtl_dist.spectra.preprocess import SNV

CONFIG = CNNConfig([ConvBlock(3, 5, stride=2, batch_norm=True)], [FCBlock(6, "elu", dropout=0.1)])


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    absorbance = rng.normal(1.0, 0.2, size=(30, 24))
    y = absorbance[:, 3] * 2 + rng.normal(0, 0.05, 30)
    X = SNV().fit_transform(absorbance)
    cv = cross_validate(X, y, CONFIG, TrainConfig(max_epochs=4, patience=2, batch_size=8), folds=3)
    return absorbance, X, cv


def test_saved_model_predicts_like_the_in_memory_ensemble(trained, tmp_path):
    absorbance, X, cv = trained
    wl = np.arange(400.0, 640.0, 10.0)
    save_model(tmp_path / "m", CONFIG, cv.states, wavelengths=wl, fold_rmse=cv.fold_rmse,
               training={"train_config": cv.train_config.to_dict()}, provenance={"data": "synthetic"})
    model = load_model(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "model.json", "model.safetensors", "preprocessing.json", "provenance.json", "wavelengths.json"]
    np.testing.assert_allclose(model.predict(absorbance), cv.ensemble().predict(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict_folds(absorbance), cv.ensemble().predict_each(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.wavelengths, wl)
    assert model.cnn_config == CONFIG and model.preprocessing == ["snv"] and model.input_units == "absorbance"
    np.testing.assert_allclose(model.fold_rmse, cv.fold_rmse, rtol=1e-6)
    assert model.provenance == {"data": "synthetic"}


def test_bad_inputs_leave_nothing_behind(trained, tmp_path):
    absorbance, _, cv = trained
    wl = np.arange(24.0)
    wrong = CNNConfig([ConvBlock(4, 5, stride=2)], [])
    # weights of another architecture: torch's own check of every key and shape, before anything is written
    with pytest.raises(RuntimeError, match=r"(?s)Error\(s\) in loading state_dict for CNN:.*(Missing key|size mismatch)"):
        save_model(tmp_path / "m", wrong, cv.states, wavelengths=wl)
    with pytest.raises(UserInputError, match="preprocessing"):
        save_model(tmp_path / "m", CONFIG, cv.states, wavelengths=wl, preprocessing=["msc"])
    assert list(tmp_path.iterdir()) == []
    save_model(tmp_path / "m", CONFIG, cv.states, wavelengths=wl)
    with pytest.raises(UserInputError, match="already exists"):
        save_model(tmp_path / "m", CONFIG, cv.states, wavelengths=wl)
    model = load_model(tmp_path / "m")
    with pytest.raises(UserInputError, match=r"expected shape \(N, 24\)"):
        model.predict(absorbance[:, :20])
    with pytest.raises(UserInputError, match="not a model directory"):
        load_model(tmp_path)
