"""The `dtl ingest`, `dtl info` and `dtl select-local` commands: results, --help, and user errors as one line on
stderr with exit code 2 and nothing written (issue 2, items 9 and 10)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import limesoda_site
from dtl_dist.cli import app
from dtl_dist.library import LOCAL_LABELLED, LOCAL_TEST, SpectralLibrary
from dtl_dist.select.kennard_stone import split_local

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _user_error(result, match):
    """Exit code 2, exactly one line on stderr naming the problem, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    assert match in lines[0], lines[0]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """UL.120 (Uppsala, SE) as its own site store, through the CLI."""
    path = tmp_path_factory.mktemp("site") / "UL.120.zarr"
    result = _run("ingest", "UL.120", "--grid", "420:2500:10", "--out", path, "--quiet")
    assert result.exit_code == 0, result.output
    assert "120 samples x 209 bands (absorbance)" in result.stdout
    return path


@pytest.mark.parametrize("command, words", [
    ("ingest", ["--units", "reflectance_percent", "--target-scale", "--som", "420:2500:10", "--append"]),
    ("info", ["--json", "Table 1"]),
    ("select-local", ["--n", "--metric", "Kennard-Stone"]),
])
def test_help(command, words):
    result = _run(command, "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for word in words:
        assert word in text


def test_ingest_library_and_info(tmp_path):
    out = tmp_path / "real.zarr"
    result = _run("ingest", "CV.98", "SC.93", "SL.125", "UL.120", "--grid", "420:2500:10", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert "436 samples x 209 bands" in result.stdout
    info = json.loads(_run("info", out, "--json").stdout)
    rows = {(r["by"], r["name"]): r for r in info["summary"]}
    assert rows[("library", "real")]["K"] == 436
    assert {name for by, name in rows if by == "country"} == {"BR", "CH", "SE"}
    sweden = pd.Series(np.concatenate([limesoda_site(s)["y"] for s in ("SL.125", "UL.120")])) / 1.724
    assert rows[("country", "SE")]["median"] == pytest.approx(sweden.median(), rel=1e-5)
    assert rows[("country", "SE")]["sd"] == pytest.approx(sweden.std(), rel=1e-5)
    assert info["units"] == "absorbance" and info["wavelengths_nm"] == [420.0, 2500.0]
    assert [p["source"] for p in info["provenance"]] == ["CV.98", "SC.93", "SL.125", "UL.120"]
    table = _run("info", out)
    assert table.exit_code == 0
    for text in ("K", "Median", "country SE", "245", "420-2500 nm", "log10(1/R)", "SOM (%) -> SOC % x 1/1.724"):
        assert text in table.stdout


def test_ingest_a_users_file_with_limesoda_sites(tmp_path, dtl_data):
    out = tmp_path / "real.zarr"
    result = _run("ingest", dtl_data / "geeves_nsw", "CV.98", "--units", "reflectance_fraction", "--country", "AU",
                  "--grid", "420:2500:10", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert "489 samples x 209 bands" in result.stdout
    info = json.loads(_run("info", out, "--json").stdout)
    rows = {(r["by"], r["name"]): r for r in info["summary"]}
    assert rows[("country", "AU")]["K"] == 391 and rows[("country", "CH")]["K"] == 98
    assert [p["source"] for p in info["provenance"]] == ["geeves_nsw", "CV.98"]


def test_select_local_saves_kennard_stone_split(site):
    result = _run("select-local", site, "--n", "30")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{site}: local_labelled 30, local_test 90"
    lib = SpectralLibrary.open(site)
    X = lib.spectra().astype(np.float64)
    snv = (X - X.mean(axis=1, keepdims=True)) / X.std(axis=1, ddof=1, keepdims=True)  # paper 2.2, by hand
    labelled, test = split_local(snv, 30)
    role = lib.meta("role")
    assert set(np.flatnonzero(role == LOCAL_LABELLED)) == set(labelled.tolist())
    assert set(np.flatnonzero(role == LOCAL_TEST)) == set(test.tolist())
    local_labelled, local_test = lib.split()
    assert (local_labelled.n_samples, local_test.n_samples) == (30, 90)
    info = json.loads(_run("info", site, "--json").stdout)
    assert {(r["by"], r["name"], r["K"]) for r in info["summary"] if r["by"] == "role"} == {
        ("role", LOCAL_LABELLED, 30), ("role", LOCAL_TEST, 90)}
    result = _run("select-local", site, "--n", "12", "--metric", "mahalanobis")
    assert result.exit_code == 0 and "local_labelled 12, local_test 108" in result.stdout


@pytest.mark.parametrize("n", ["1", "121"])
def test_select_local_n_out_of_range(site, tmp_path, n):
    """On a copy already split 30 / 90 (the module's store is not touched): the split is left as it was."""
    copy = tmp_path / "site.zarr"
    shutil.copytree(site, copy)
    assert _run("select-local", copy, "--n", "30").exit_code == 0
    before = SpectralLibrary.open(copy).meta("role")
    _user_error(_run("select-local", copy, "--n", n), f"--n {n}: expected 2 <= n <= 120")
    after = SpectralLibrary.open(copy).meta("role")
    assert (after == LOCAL_LABELLED).sum() == 30 and np.array_equal(before, after)


def test_user_errors_exit_2_one_line_nothing_written(tmp_path, site):
    frame = pd.DataFrame(np.full((3, 4), 0.5), columns=["400", "410", "420", "430"]).assign(soc=[1.0, 2.0, 3.0])
    frame.loc[1, "420"] = np.inf
    frame.to_csv(tmp_path / "bad.csv", index=False)
    out = tmp_path / "lib.zarr"
    common = ["--units", "reflectance_fraction", "--target", "soc", "--grid", "400:430:10", "--out", out, "-q"]
    _user_error(_run("ingest", tmp_path / "bad.csv", *common), "bad.csv: row 2, column '420': spectral value inf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]
    _user_error(_run("ingest", tmp_path / "bad.csv", *common[:4], "--grid", "4:3:1", "--out", out),
                "wavelength grid 4.0:3.0:1.0: expected start < stop")
    _user_error(_run("ingest", "XX.1", "--out", out), "XX.1: no such file or folder")
    _user_error(_run("ingest", "UL.120", "--out", site), "already exists")
    _user_error(_run("ingest", "SL.125", "--out", site, "--append", "--grid", "400:2500:10"),
                "grid mismatch on append")
    _user_error(_run("info", tmp_path / "bad.csv"), "not a readable Zarr store")
    _user_error(_run("select-local", tmp_path / "nowhere.zarr"), "no such spectral library store")
    _user_error(_run("select-local", site, "--metric", "cosine"), "metric='cosine'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]
    assert SpectralLibrary.open(site).n_samples == 120


def test_append_through_cli(tmp_path):
    out = tmp_path / "se.zarr"
    assert _run("ingest", "UL.120", "--grid", "420:2500:10", "--out", out, "-q").exit_code == 0
    result = _run("ingest", "SL.125", "--append", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    lib = SpectralLibrary.open(out)
    assert lib.n_samples == 245 and [p["source"] for p in lib.provenance] == ["UL.120", "SL.125"]


def test_module_entry_point_reports_one_line(tmp_path):
    """`python -m dtl_dist.cli` as a user runs it: exit code 2, one line, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "dtl_dist.cli", "info", str(tmp_path / "missing.zarr")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'missing.zarr'}: no such spectral library store"
    assert proc.stdout == ""


def test_a_data_folder_that_is_missing_or_lacks_the_file_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DTL_DATA", str(tmp_path / "nowhere"))
    _user_error(_run("demo", "--out", tmp_path / "out"), f"DTL_DATA={tmp_path / 'nowhere'}: no such folder")
    monkeypatch.delenv("DTL_DATA")
    _user_error(_run("demo", "--out", tmp_path / "out", "--data-dir", tmp_path),
                "no geeves_nsw/datsoilspc.npz; expected the Geeves NSW library there")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_demo_refuses_a_site_its_grid_does_not_fit_before_reading_the_library(tmp_path):
    """SSP.460's spectra end at 2498 nm: the default grid (to 2500 nm) is refused in one line naming the site and a
    grid that fits, before the library is ingested; an unknown site names the known ones."""
    _user_error(_run("demo", "--out", tmp_path / "out", "--site", "SSP.460", "--country", "BR"),
                "SSP.460: spectra cover 350-2498 nm, which does not contain the grid 420-2500 nm")
    _user_error(_run("demo", "--out", tmp_path / "out", "--site", "XX.1"),
                "--site XX.1: expected a LimeSoDa site with spectra (CV.98, SC.93, SL.125, UL.120")
    assert not (tmp_path / "out" / "data" / "library.zarr").exists()
