"""`dtl study` on real LimeSoDa data, small: the nine models and five baselines, metrics recomputed by hand from
the predictions, the recommendation from cv_rmse alone (and never from local_test), every model reloaded and
predicting the same values, stage caching, a killed study resumed to the same metrics, and bad inputs."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_squared_error

from dtl_dist.errors import UserInputError
from dtl_dist.library import LOCAL_TEST, SpectralLibrary
from dtl_dist.library.ingest import REAL_DATA_GRID, ingest
from dtl_dist.library.model_files import model_format
from dtl_dist.linear.saved import load_linear
from dtl_dist.nn.model_dir import load_model
from dtl_dist.study.config import StudyConfig
from dtl_dist.study.evaluate import COLUMNS
from dtl_dist.study.ensemble_model import ENSEMBLE_FORMAT
from dtl_dist.study.models import MODELS
from dtl_dist.study.predict import load_any
from dtl_dist.study.run import run_study

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
NAMES = [m.name for m in MODELS]
SMALL = dict(country="SE", n_local=15, k=30, trials=2, cv_folds=3, inner_folds=3, subset=30, b=8, ncomp=4,
             max_epochs=40, workers=0, cpus=2)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Library: CV.98, SC.93 and SL.125 (country SE = SL.125); site: UL.120 (Uppsala, SE)."""
    d = tmp_path_factory.mktemp("study_data")
    library = ingest(["CV.98", "SC.93", "SL.125"], d / "library.zarr", grid=REAL_DATA_GRID)
    site = ingest(["UL.120"], d / "UL.120.zarr", grid=REAL_DATA_GRID)
    return d, library.path, site.path


def _config(stores, out, **kw):
    _, library, site = stores
    return StudyConfig(**{"library": str(library), "site": str(site), "out": str(out), **SMALL, **kw})


@pytest.fixture(scope="module")
def study(stores, tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("study") / "run"
    lines = []
    result = run_study(_config(stores, out), echo=lines.append)
    return out, result, lines


def test_every_model_of_fig_2_and_the_baselines_are_in_metrics(study):
    out, result, _ = study
    metrics = pd.read_csv(out / "metrics.csv", keep_default_na=False)
    assert tuple(metrics.columns) == COLUMNS
    assert list(metrics.model) == NAMES + ["recommended"]
    predictions = pd.read_csv(out / "predictions.csv", dtype={"sample_id": str})
    bounds = [f"{name}_{side}" for name in NAMES for side in ("lo", "hi")]
    assert list(predictions.columns) == ["sample_id", "observed"] + NAMES + bounds and len(predictions) == 105
    cv = pd.read_csv(out / "cv_predictions.csv", dtype={"sample_id": str})
    assert list(cv.columns) == ["sample_id", "outer_fold", "observed"] + NAMES and len(cv) == 15
    assert sorted(p.name for p in (out / "models").iterdir()) == sorted(NAMES)
    for name in NAMES:  # no CNN predicts one value for everything
        assert np.std(predictions[name]) > 0.05, name


def test_metrics_are_the_predictions_scored_by_hand(study):
    out, _, _ = study
    metrics = pd.read_csv(out / "metrics.csv", keep_default_na=False).set_index("model")
    predictions = pd.read_csv(out / "predictions.csv")
    cv = pd.read_csv(out / "cv_predictions.csv")
    observed = predictions.observed.to_numpy()
    local_rmse = np.sqrt(mean_squared_error(observed, predictions["Local"]))
    for name in NAMES:
        estimated = predictions[name].to_numpy()
        rmse = np.sqrt(mean_squared_error(observed, estimated))
        assert metrics.loc[name, "rmse"] == pytest.approx(rmse, rel=1e-5)
        assert metrics.loc[name, "me"] == pytest.approx(np.mean(estimated - observed), rel=1e-4, abs=1e-6)
        # metrics.csv and predictions.csv keep 6 significant digits: dRMSE, a difference of two RMSEs in
        # percent, is exact to ~1e-5 / |dRMSE| of itself
        assert metrics.loc[name, "delta_rmse_pct"] == pytest.approx((local_rmse - rmse) / local_rmse * 100,
                                                                     rel=1e-4, abs=1e-3)
        assert metrics.loc[name, "cv_rmse"] == pytest.approx(
            np.sqrt(mean_squared_error(cv.observed, cv[name])), rel=1e-5)
    assert metrics.loc["Local", "n_train"] == 15 and metrics.loc["DTL-R_g", "n_train"] == 15
    assert metrics.loc["Global", "n_train"] == 98 + 93 + 125


def test_the_recommended_model_follows_the_rule_and_has_its_own_test_metrics(study):
    out, result, _ = study
    metrics = pd.read_csv(out / "metrics.csv", keep_default_na=False).set_index("model")
    chosen = metrics.loc["recommended", "recommended_model"]
    # by hand: the stack, unless the pick of the single model with the lowest RMSE on the other folds (for each
    # outer fold) or mean-1SE has an RMSE lower by more than the standard error of the paired per-fold differences
    cv = pd.read_csv(out / "cv_predictions.csv")
    singles = [m.name for m in MODELS if m.make != "ensemble"]
    picked = np.empty(len(cv))
    for f in cv.outer_fold.unique():
        rest = cv.outer_fold != f
        best = np.sqrt(cv.loc[rest, singles].sub(cv.observed[rest], axis=0).pow(2).mean()).idxmin()
        picked[~rest] = cv.loc[~rest, best]
    cv["pick"] = picked
    per_fold = cv.groupby("outer_fold").apply(
        lambda g: np.sqrt(g[["pick", "mean-1SE", "stack"]].sub(g.observed, axis=0).pow(2).mean()))
    overall = np.sqrt(cv[["pick", "mean-1SE", "stack"]].sub(cv.observed, axis=0).pow(2).mean())
    beyond = [r for r in ("pick", "mean-1SE") if overall["stack"] - overall[r] > (per_fold["stack"] - per_fold[r]).std()
              / np.sqrt(len(per_fold))]
    expected = min(beyond, key=overall.get) if beyond else "stack"
    if expected == "pick":
        expected = metrics.loc[singles, "cv_rmse"].idxmin()
    assert chosen == expected == result["recommended"]
    assert json.loads((out / "choice.json").read_text())["single_pick_cv"] == pytest.approx(overall.pick, rel=1e-5)
    row = metrics.loc["recommended", ["rmse", "me", "ccc", "r2", "rpiq", "cv_rmse"]]
    assert row.tolist() == metrics.loc[chosen, ["rmse", "me", "ccc", "r2", "rpiq", "cv_rmse"]].tolist()



def test_a_site_outside_the_library_is_recommended_among_the_models_that_use_none(stores, tmp_path):
    """CV.98 (in-situ scans of moist soil) against the lab-dried LimeSoDa library: the coverage check puts it
    outside, so every model is still built and reported but the ensembles combine, and the pick chooses among, Local
    and local-PLS only (dtl_dist.study.models.candidates), and the report says why."""
    from dtl_dist.study.report import write_report
    from dtl_dist.study.stages import stage_summary

    d = stores[0]
    site = d / "CV.98.zarr"
    if not site.exists():
        ingest(["CV.98"], site, grid=REAL_DATA_GRID)
    library = d / "SE_BR.zarr"
    if not library.exists():
        ingest(["SC.93", "SL.125", "UL.120"], library, grid=REAL_DATA_GRID)
    out = tmp_path / "run"
    result = run_study(_config((d, library, site), out), echo=lambda line: None)
    assert result["coverage"]["kind"] == "outside" and result["coverage"]["share_inside"] < 0.25
    metrics = pd.read_csv(out / "metrics.csv", keep_default_na=False).set_index("model")
    assert set(NAMES) <= set(metrics.index) and np.isfinite(metrics.loc["DTL-IR_g", "rmse"])
    choice = json.loads((out / "choice.json").read_text())
    assert choice["candidates"] == ["Local", "local-PLS"] and choice["single_pick"] in choice["candidates"]
    assert result["recommended"] in {"Local", "local-PLS", "mean-1SE", "stack"}
    for ensemble in ("mean-1SE", "stack"):
        assert set(stage_summary(out, ensemble)["members"]) <= {"Local", "local-PLS"}
    assert "only the models that use no library were candidates: Local, local-PLS" in \
        write_report(out, echo=lambda line: None).read_text()

def test_every_outer_fold_has_its_own_rslocal_selection_and_local_choice(study):
    """Per outer split, its own RS-LOCAL run and choice; that no split sees the samples it predicts is shown
    with a planted SOC in test_study_parts.py::test_a_planted_soc_never_reaches_its_own_outer_folds_prediction."""
    out, result, _ = study
    cv = pd.read_csv(out / "cv_predictions.csv")
    assert sorted(cv.outer_fold.unique()) == [0, 1, 2]
    summaries = result["summaries"]
    # RS-LOCAL ran once per outer fold with that fold's training samples, and once on all of them
    assert len(summaries["rslocal:global"]["n_selected"]) == 4
    assert all(n == 30 for n in summaries["rslocal:global"]["n_selected"])
    # Local: every outer fold chose among the same trials by its own inner RMSE
    assert len(summaries["Local"]["per_split"]) == 4


def test_saved_models_of_every_kind_reload_and_predict_the_same(study):
    out, _, _ = study
    predictions = pd.read_csv(out / "predictions.csv", dtype={"sample_id": str})
    site = SpectralLibrary.open(out / "data" / "site.zarr")
    test = site.subset(ids=predictions.sample_id)
    kinds = set()
    for name in NAMES:
        path = out / "models" / name
        kind = model_format(path)
        kinds.add(kind)
        model = (load_model(path) if kind.endswith("cnn-fold-ensemble") else load_any(path)
                 if kind == ENSEMBLE_FORMAT else load_linear(path))
        np.testing.assert_allclose(model.predict(test.spectra()), predictions[name], rtol=1e-4, atol=1e-5)
    assert kinds == {"dtl-dist/cnn-fold-ensemble", "dtl-dist/pls", "dtl-dist/mbl", ENSEMBLE_FORMAT}


def test_ensembles_are_chosen_without_the_fold_they_predict(study):
    """mean-1SE by hand (numpy on cv_predictions.csv): for each outer fold, the models whose RMSE on the other
    folds is within one standard error of the lowest; their plain mean predicts the fold. Its model is the same
    rule on all folds; its local_test estimates are the mean of its members' columns."""
    out, result, _ = study
    cv = pd.read_csv(out / "cv_predictions.csv")
    predictions = pd.read_csv(out / "predictions.csv")
    singles = [m.name for m in MODELS if m.make != "ensemble"]

    def members(rows):
        errors = cv.loc[rows, singles].sub(cv.observed[rows], axis=0) ** 2
        total = np.sqrt(errors.mean())
        best = total.idxmin()
        per_fold = np.sqrt(errors[best].groupby(cv.outer_fold[rows]).mean())
        return sorted(total.index[total <= total[best] + per_fold.std(ddof=1) / np.sqrt(per_fold.size)])

    summary = result["summaries"]["mean-1SE"]
    for f in sorted(cv.outer_fold.unique()):
        chosen = members(cv.outer_fold != f)
        assert sorted(summary["per_fold"][f]) == chosen
        scored = cv.outer_fold == f
        np.testing.assert_allclose(cv.loc[scored, "mean-1SE"], cv.loc[scored, chosen].mean(axis=1), rtol=1e-5)
    final = members(cv.index == cv.index)
    assert sorted(summary["members"]) == final
    np.testing.assert_allclose(predictions["mean-1SE"], predictions[final].mean(axis=1), rtol=1e-4)
    stack = result["summaries"]["stack"]
    assert sum(stack["members"].values()) == pytest.approx(1) and min(stack["members"].values()) > 0
    np.testing.assert_allclose(predictions["stack"], sum(w * predictions[m] for m, w in stack["members"].items()),
                               rtol=1e-4)


def test_a_rerun_skips_every_stage(study, stores):
    out, result, _ = study
    lines = []
    again = run_study(_config(stores, out, resume=True), echo=lines.append)
    assert sum("skipped" in line for line in lines) == len(result["summaries"])
    pd.testing.assert_frame_equal(again["metrics"], result["metrics"])


def test_the_choice_never_reads_local_test(study, stores, tmp_path):
    """The same study with local_test's SOC removed recommends the same model with the same cv_rmse."""
    out, result, _ = study
    site = SpectralLibrary.open(out / "data" / "site.zarr")
    soc = site.target("soc").copy()
    soc[site.meta("role") == LOCAL_TEST] = np.nan
    blind = SpectralLibrary.create(tmp_path / "blind.zarr", site.spectra(), site.wavelengths, site.sample_id,
                                   targets={"soc": soc}, meta={m: site.meta(m) for m in site.meta_fields},
                                   units=site.units, preprocessing=site.preprocessing)
    again = run_study(_config(stores, tmp_path / "run", site=str(blind.path)), echo=lambda line: None)
    assert again["recommended"] == result["recommended"]
    pd.testing.assert_series_equal(again["metrics"].cv_rmse, result["metrics"].cv_rmse)
    assert again["metrics"].rmse.isna().all()  # nothing to test against


def test_resume_refuses_changed_options_and_an_occupied_out(study, stores):
    out, _, _ = study
    with pytest.raises(UserInputError, match="k differ from the study"):
        run_study(_config(stores, out, resume=True, k=31))
    with pytest.raises(UserInputError, match="pass --resume"):
        run_study(_config(stores, out))


def test_only_runs_one_kind_and_refuses_a_kind_whose_inputs_are_missing(stores, tmp_path):
    with pytest.raises(UserInputError, match="stage DTL-R_g needs Global, which has not run yet"):
        run_study(_config(stores, tmp_path / "run", only=("transfer",)))
    assert not (tmp_path / "run").exists()
    result = run_study(_config(stores, tmp_path / "run", only=("rslocal",)), echo=lambda line: None)
    assert result["metrics"] is None and set(result["summaries"]) == {"rslocal:global", "rslocal:country"}
    assert not (tmp_path / "run" / "metrics.csv").exists()


def _cli(stores, out, *extra):
    _, library, site = stores
    args = ["--library", library, "--site", site, "--out", out]
    for key, value in SMALL.items():
        args += [f"--{key.replace('_', '-')}", value]
    return [sys.executable, "-m", "dtl_dist.cli", "study", *map(str, args), *extra]


def _start(command, env):
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


def _read_until(proc, pattern: str) -> str:
    """Lines of ``proc`` up to the first that matches ``pattern`` (pytest-timeout guards a silent process)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if re.search(pattern, line):
            return "".join(seen)
    raise AssertionError(f"{pattern!r} never came; the study said:\n{''.join(seen)[-3000:]}")


def _end(proc) -> int:
    """SIGKILL the study's process group (the driver, its Ray and Dask processes); its exit code."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
    proc.stdout.close()
    return proc.returncode


def _unfinished(run, stage_glob: str) -> list:
    return [d.name for d in (run / "stages").glob(stage_glob) if not (d / "stage.json").exists()]


@pytest.mark.heavy
def test_a_study_killed_in_every_stage_resumes_to_the_same_metrics(study, stores, tmp_path):
    """SIGKILL during RS-LOCAL, a Ray worker SIGKILLed mid-trial (retried), SIGKILL during a transfer, while a
    model directory and while metrics.csv are written: each `--resume` goes on, and the last one's metrics.csv
    equals the unbroken run's. A second study on the folder meanwhile refuses at once."""
    from conftest import KillWhenRunning

    out, _, _ = study
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    resume = _cli(stores, run, "--resume")

    proc = _start(_cli(stores, run), env)  # 1. killed during RS-LOCAL
    _read_until(proc, r"rslocal:\w+: started")
    assert _end(proc) == -signal.SIGKILL
    assert _unfinished(run, "rslocal_*") and not (run / "metrics.csv").exists()

    proc = _start(resume, env)  # 2. a Ray worker killed mid-trial, then the study during a transfer
    killer = KillWhenRunning("ray::run_task", root=proc.pid)
    _read_until(proc, r"(Local|Global|Country): started")
    began = time.monotonic()
    second = subprocess.run(resume, capture_output=True, text=True, timeout=120, env=env)
    assert second.returncode == 2 and time.monotonic() - began < 60, second.stderr[-2000:]
    assert second.stderr.strip() == (f"error: --out {run}: another dtl study (process {proc.pid}) is running in "
                                     "this directory; wait for it to end or choose another --out")
    _read_until(proc, r"DTL-I?R_\w: started")
    assert _end(proc) == -signal.SIGKILL and killer.killed is not None
    assert _unfinished(run, "DTL-*R_*") and not (run / "metrics.csv").exists()

    for published in ("*/models/*", "*/metrics.csv"):  # 3, 4. killed between writing and renaming
        proc = _start([sys.executable, str(ROOT / "tests" / "kill_at.py"), published, "dtl", *resume[3:]], env)
        said = _read_until(proc, "kill_at: SIGKILL")
        assert _end(proc) == -signal.SIGKILL
        assert list(run.rglob(".*.tmp-*")), said[-2000:]
    assert not (run / "metrics.csv").exists()

    resumed = subprocess.run(resume, capture_output=True, text=True, timeout=600, env=env)  # 5. to the end
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "note: removed .metrics.csv.tmp-" in resumed.stderr and not list(run.rglob(".*.tmp-*"))
    metrics = pd.read_csv(run / "metrics.csv")
    pd.testing.assert_frame_equal(metrics, pd.read_csv(out / "metrics.csv"))
    assert (metrics.failed_trials == 0).all()  # the killed worker's trial ran again
    for trials in run.glob("stages/*/trials.csv"):
        assert "error" not in set(pd.read_csv(trials).status), trials


@pytest.mark.parametrize("case, message", [
    ("grid", "wavelength grid"),
    ("units", "units/preprocessing"),
    ("n_local", "--n-local 500: the site"),
    ("country", "--country XX: matches no sample"),
    ("no_target", "has no target 'soc'"),
    ("folds", "--cv-folds 1: expected an integer >= 2"),
    ("gpus", "--gpus-per-trial 0.25: the Ray cluster has 0 GPU(s)"),  # checked on the started Ray, before any work
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(stores, tmp_path, case, message):
    d, library, site = stores
    extra = []
    src = SpectralLibrary.open(site)
    if case == "grid":
        site = SpectralLibrary.create(tmp_path / "grid.zarr", src.spectra()[:, :-1], src.wavelengths[:-1],
                                      src.sample_id, targets={"soc": src.target("soc")}).path
    elif case == "units":
        site = SpectralLibrary.create(tmp_path / "units.zarr", src.spectra(), src.wavelengths, src.sample_id,
                                      targets={"soc": src.target("soc")}, units="reflectance_fraction").path
    elif case == "n_local":
        extra = ["--n-local", "500"]
    elif case == "country":
        extra = ["--country", "XX"]
    elif case == "no_target":
        lib = SpectralLibrary.open(library)
        library = SpectralLibrary.create(tmp_path / "nosoc.zarr", lib.spectra(), lib.wavelengths, lib.sample_id,
                                         units=lib.units, preprocessing=lib.preprocessing).path
    elif case == "folds":
        extra = ["--cv-folds", "1"]
    elif case == "gpus":
        extra = ["--gpus-per-trial", "0.25"]
    out = tmp_path / "out"
    cmd = _cli((d, library, site), out, *extra)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not out.exists()


# --- what a study gives its user: the report and dtl predict (issue 9) --------------------------------------


def test_report_is_one_self_contained_page_with_every_figure(study):
    out, result, _ = study
    from dtl_dist.study.report import write_report

    page = write_report(out, echo=lambda line: None).read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//|url\(", page)  # nothing fetched from a network
    figures = ["fig3a_soc_densities.png", "fig3b_pca.png", "fig4a_delta_rmse.png", "fig4b_observed_vs_estimated.png",
               "fig4b_recommended_intervals.png"]
    for name in figures:
        assert (out / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / "report" / name).stat().st_size > 5_000
    traces = [p for p in (out / "stages").glob("rslocal_*/trace.png")]
    assert page.count("data:image/png;base64,") == len(figures) + len(traces) == len(figures) + 2
    for text in ("Table 1", "Table 3", "k selected by RS-LOCAL", "outer fold",
                 result["recommended"], "Fig. 4c (map of the site) skipped", "Wall time per stage", "sha256",
                 "Library coverage", "mean-1SE", "stack", "nested"):
        assert text in page, text
    # Table 3 holds metrics.csv's values: every row and column, numbers as 3 decimals, NaN as "-"
    table = re.search(r"<h2>Table 3:.*?<table>(.*?)</table>", page, re.S).group(1)
    header = re.findall(r"<th>(.*?)</th>", table)
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table)[1:]]
    metrics = pd.read_csv(out / "metrics.csv", keep_default_na=False, na_values=[""])
    assert [r[header.index("model")] for r in rows] == list(metrics.model)
    for row, (_, expected) in zip(rows, metrics.iterrows()):
        for column in ("rmse", "me", "ccc", "r2", "rpiq", "delta_rmse_pct", "cv_rmse", "coverage"):
            value = expected[column]
            assert row[header.index(column)] == ("-" if pd.isna(value) else f"{value:.3f}"), (expected.model, column)
    [chosen] = re.findall(r'<tr class="chosen"><td>(.*?)</td>', table)  # the recommended model's own row
    assert chosen == result["recommended"]
    coverage = json.loads((out / "study.json").read_text())["coverage"]
    assert coverage == result["coverage"] and html.escape(coverage["verdict"][1:]) in page
    assert coverage["n_site"] == 120 and coverage["n_library_checked"] == 98 + 93 + 125


def _export_test_spectra(out, path, scale=None):
    """local_test spectra as a CSV with columns named by wavelength (absorbance, or reflectance % with scale)."""
    predictions = pd.read_csv(out / "predictions.csv", dtype={"sample_id": str})
    site = SpectralLibrary.open(out / "data" / "site.zarr")
    test = site.subset(ids=predictions.sample_id)
    values = test.spectra().astype(np.float64)
    if scale == "percent":
        values = 100 * 10 ** (-values)
    frame = pd.DataFrame(values, columns=[f"{w:g}" for w in test.wavelengths])
    frame.insert(0, "id", predictions.sample_id)
    frame.to_csv(path, index=False)
    return predictions


def _predict(*args):
    return subprocess.run([sys.executable, "-m", "dtl_dist.cli", "predict", *map(str, args), "--quiet"],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", ["Local", "DTL-IR_g", "local-PLS", "MBL", "mean-1SE"])
def test_predict_gives_the_studys_estimates_and_intervals(study, tmp_path, name):
    out, _, _ = study
    predictions = _export_test_spectra(out, tmp_path / "new.csv", scale="percent")
    proc = _predict("--model", out / "models" / name, "--spectra", tmp_path / "new.csv", "--units",
                    "reflectance_percent", "--id-column", "id", "--out", tmp_path / "preds.csv")
    assert proc.returncode == 0, proc.stderr
    got = pd.read_csv(tmp_path / "preds.csv", dtype={"sample_id": str})
    assert list(got.sample_id) == list(predictions.sample_id)
    np.testing.assert_allclose(got.soc, predictions[name], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got.soc_lo, predictions[f"{name}_lo"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got.soc_hi, predictions[f"{name}_hi"], rtol=1e-4, atol=1e-4)


def test_predict_with_a_run_uses_the_recommended_model(study, tmp_path):
    out, result, _ = study
    predictions = _export_test_spectra(out, tmp_path / "new.csv")
    proc = _predict("--model", out, "--spectra", tmp_path / "new.csv", "--units", "absorbance", "--id-column", "id",
                    "--out", tmp_path / "preds.csv", "--level", "0.8")
    assert proc.returncode == 0, proc.stderr
    assert f"models/{result['recommended']}" in proc.stdout and "80% intervals" in proc.stdout
    np.testing.assert_allclose(pd.read_csv(tmp_path / "preds.csv").soc, predictions[result["recommended"]],
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case, message", [
    ("grid", "does not contain the model's grid"),
    ("units", "is outside (0, 1] for --units reflectance_fraction"),
    ("absorbance", "is outside the plausible -1 to 6 for --units absorbance"),
    ("nan", "row 3, column '1000': spectral value nan"),
    ("version", "format version 0"),
])
def test_predict_bad_input_exits_2_and_writes_nothing(study, tmp_path, case, message):
    out, _, _ = study
    model = out / "models" / "local-PLS"
    spectra = tmp_path / "new.csv"
    _export_test_spectra(out, spectra, scale="percent")
    units = "reflectance_percent"
    frame = pd.read_csv(spectra)
    if case == "grid":
        frame = frame.drop(columns=[c for c in frame.columns if c != "id" and float(c) < 600])
    elif case == "units":
        units = "reflectance_fraction"  # percent values declared as fractions
    elif case == "absorbance":
        units = "absorbance"  # reflectance % declared as absorbance
    elif case == "nan":
        frame.loc[2, "1000"] = np.nan
    elif case == "version":
        copy = tmp_path / "model"
        shutil.copytree(model, copy)
        info = json.loads((copy / "model.json").read_text())
        (copy / "model.json").write_text(json.dumps({**info, "format_version": 0}))
        model = copy
    frame.to_csv(spectra, index=False)
    proc = _predict("--model", model, "--spectra", spectra, "--units", units, "--id-column", "id", "--out",
                    tmp_path / "preds.csv")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "preds.csv").exists()
