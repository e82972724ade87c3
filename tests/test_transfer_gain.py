"""Transfer gains where the library holds the site's soils, and not where it does not (issue 16, item 3, small).

A `dtl synth` site (120 samples, n = 30 by Kennard-Stone) and two libraries: 1,500 `dtl synth` samples plus 3,000
of the site's own soils on its spectrometer (a regional survey), and the 1,500 alone. The study's instance
transfer (the localised data: the library spectra among the site's where it holds enough, else RS-LOCAL's k; and MBL
with the library as reference) runs on each; test RMSE on the 90 local_test samples is compared with local PLS on
the 30. Figures at the time of writing: local PLS 0.185; rich library MBL 0.171, PLS on the localised data
(RS-LOCAL-PLS, 2,648 spectra) 0.167; library alone MBL 0.219."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from dtl_dist.library.synthetic import SiteGenerator, make_library, write_site
from dtl_dist.study.config import StudyConfig
from dtl_dist.study.data import load_study_data
from dtl_dist.study.run import run_study

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from synthetic_cases import GRID, _create  # noqa: E402

pytestmark = pytest.mark.slow


def _test_rmse(tmp_path: Path, name: str, parts: list) -> tuple[dict, dict]:
    config = StudyConfig(library=str(_create(tmp_path / f"{name}.zarr", parts)), site=str(tmp_path / "site.zarr"),
                         out=str(tmp_path / name), k=100, workers=0, only=("rslocal", "baseline"))
    summaries = run_study(config, echo=lambda line: None)["summaries"]
    observed = load_study_data(config, tmp_path / name).test_y()
    rmse = {model: float(np.sqrt(np.mean((np.asarray(s["test_predictions"]) - observed) ** 2)))
            for model, s in summaries.items() if "test_predictions" in s}
    return rmse, summaries


def test_instance_transfer_gains_only_from_a_library_holding_the_sites_soils(tmp_path):
    write_site(tmp_path / "site.zarr", 120, seed=0, wavelengths=GRID)
    library = make_library(1500, 0, wavelengths=GRID)
    survey = SiteGenerator(0, GRID, 10, 0).rows(1000, 4000)
    survey.sample_id = np.array([f"survey-{i}" for i in survey.sample_id])
    rich, searched = _test_rmse(tmp_path, "rich", [library, survey])
    poor, _ = _test_rmse(tmp_path, "poor", [library])
    assert rich["local-PLS"] == pytest.approx(poor["local-PLS"])  # the same 30 labelled samples
    localised = searched["rslocal:global"]  # the site's neighbourhood (>= 10 k spectra), not RS-LOCAL's k
    assert not localised["searched"] and min(localised["n_selected"]) >= 1000
    assert rich["MBL"] <= 0.95 * rich["local-PLS"]  # the library's copies of the site's soils help
    assert rich["RS-LOCAL-PLS"] <= 0.95 * rich["local-PLS"]
    assert poor["MBL"] >= rich["local-PLS"]  # without them, the same method does not beat 30 local samples
    assert poor["MBL"] - rich["MBL"] >= 0.15 * rich["local-PLS"]
