"""The main job (`dtl demo`) end to end on real LimeSoDa data, small: stages, outputs, consistency, rerun."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from dtl_dist.library import SpectralLibrary
from dtl_dist.metrics import delta_rmse, evaluate
from dtl_dist.study.demo import DemoConfig, run_demo


def test_demo_runs_every_stage_and_its_table_matches_the_stage_outputs(tmp_path):
    config = DemoConfig(out=str(tmp_path / "demo"), k=60, trials=2, folds=5)
    rows = run_demo(config, echo=lambda line: None)
    out = tmp_path / "demo"

    assert set(rows) == {"Local PLS", "RS-LOCAL-PLS", "Local 1D-CNN", "DTL-I 1D-CNN"}
    site = SpectralLibrary.open(out / "data" / "CV.98.zarr")
    labelled, test = site.split()
    assert (labelled.n_samples, test.n_samples) == (30, 68)
    localised = SpectralLibrary.open(out / "rslocal" / "localised.zarr")
    assert localised.n_samples == 30 + json.loads((out / "rslocal" / "baseline.json").read_text())["n_selected"]

    # the comparison table recomputes the stage's own figures from its estimates
    baseline = json.loads((out / "rslocal" / "baseline.json").read_text())
    estimates = pd.read_csv(out / "rslocal" / "predictions.csv")
    np.testing.assert_allclose(estimates["observed"], test.target("soc"))
    for name, key in (("Local PLS", "local_pls"), ("RS-LOCAL-PLS", "rslocal_pls")):
        assert rows[name]["rmse"] == baseline[key]["test"]["rmse"]
        assert rows[name]["rmse"] == evaluate(estimates["observed"], estimates[key])["rmse"]
    assert rows["Local PLS"]["delta_rmse_pct"] == 0.0
    assert rows["DTL-I 1D-CNN"]["delta_rmse_pct"] == delta_rmse(rows["Local 1D-CNN"]["rmse"],
                                                                rows["DTL-I 1D-CNN"]["rmse"])
    assert all(np.isfinite(row["rmse"]) and row["n"] == 68 for row in rows.values())
    assert json.loads((out / "comparison.json").read_text())["models"] == rows
    assert (out / "observed_vs_estimated.png").read_bytes()[:4] == b"\x89PNG"

    # a rerun finds every stage done and reproduces the table without retraining
    stamp = (out / "cnn_dtl_i" / "model").stat().st_mtime_ns
    assert run_demo(config, echo=lambda line: None) == rows
    assert (out / "cnn_dtl_i" / "model").stat().st_mtime_ns == stamp
