"""The Ray Tune search (paper section 2.3.1): ASHA stops trials early, an interrupted search resumes,
bad configs are rejected with a reason, bad input is a clear error. Real Ray, 2 CPUs."""

from __future__ import annotations

import math
import os
import signal
import time

import numpy as np
import pytest
from ray import tune as ray_tune

from dtl_dist.engines.ray import TuneRunner, init, param_space, trial_resources
from dtl_dist.errors import UserInputError
from dtl_dist.nn.model_dir import load_model
from dtl_dist.nn.search import TuneData, check_space, run_trial, tune
from dtl_dist.nn.space import Categorical, Int, SearchSpace, default_space
from dtl_dist.nn.trainer import cross_validate
from dtl_dist.spectra.preprocess import SNV

EPOCHS = 6


def tiny_space(**overrides):
    """Small models, a fixed epoch budget and no early stopping inside it (so ASHA does the stopping)."""
    return default_space({
        "n_conv_blocks": Int(0, 1), "n_fc_blocks": Int(0, 1), "filters": Int(2, 4), "nodes": Int(2, 8),
        "kernel_size": Int(2, 6), "max_epochs": Int(EPOCHS, EPOCHS), "patience": Int(EPOCHS, EPOCHS),
        "batch_size": Categorical((16,)), **overrides,
    })


def search_data() -> tuple[TuneData, np.ndarray]:
    """40 synthetic spectra of 24 bands, SOC from their first four bands, 4 folds; and their absorbance."""
    rng = np.random.default_rng(0)
    absorbance = rng.normal(1.0, 0.3, size=(40, 24))
    X = SNV().fit_transform(absorbance)
    y = X[:, :4].sum(axis=1) + rng.normal(0, 0.1, 40)
    data = TuneData.make(X, y, folds=4, seed=0, wavelengths=np.arange(400.0, 640.0, 10.0), source="synthetic")
    return data, absorbance


@pytest.fixture(scope="module")
def data():
    return search_data()


def test_asha_stops_some_trials_and_the_best_reproduces(ray_session, data, tmp_path):
    data, absorbance = data
    runner = TuneRunner(tmp_path, max_concurrent=2, progress=False)
    result = tune(data, tiny_space(), trials=8, runner=runner, seed=1, grace_period=1, reduction_factor=2)
    table = result.table()
    assert len(table) == 8 and set(table.status) <= {"complete", "stopped"}
    stopped = [t for t in result.trials if t.status == "stopped"]
    complete = result.complete
    assert stopped and all(t.epochs < EPOCHS for t in stopped)  # ASHA stopped them early
    assert complete and all(t.epochs == EPOCHS for t in complete)
    best = result.best
    assert best.rmse == min(t.rmse for t in complete) == table.rmse[table.status == "complete"].min()
    # the best trial's score is the 4-fold CV RMSE of its config, trained again in-process
    cnn, train = tiny_space().to_config(best.params, seed=1)
    cv = cross_validate(data.X, data.y, cnn, train, data.folds)
    assert best.rmse == pytest.approx(cv.mean_rmse, rel=1e-5)
    assert best.rmse_std == pytest.approx(cv.std_rmse, rel=1e-4)
    # its checkpoint is a model directory that loads without Ray and predicts like the in-memory ensemble
    model = load_model(result.best_model_dir())
    np.testing.assert_allclose(model.predict_folds(absorbance), cv.ensemble().predict_each(data.X), rtol=1e-4, atol=1e-5)


class InterruptAfter(ray_tune.Callback):
    """Press Ctrl-C after ``n`` trials finished (once: a restored copy of this callback does nothing)."""

    def __init__(self, n):
        self.n, self.finished = n, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finished += 1
        if self.finished == self.n:
            os.kill(os.getpid(), signal.SIGINT)

    def __getstate__(self):
        return {"n": -1, "finished": 0}


def test_interrupted_search_resumes_to_the_requested_total(ray_session, data, tmp_path):
    data, absorbance = data
    first = tune(data, tiny_space(), trials=4, seed=2, grace_period=2, runner=TuneRunner(
        tmp_path, max_concurrent=1, progress=False, callbacks=[InterruptAfter(2)]))
    assert 2 <= len(first.trials) < 4
    finished = {t.trial_id: t.rmse for t in first.trials if t.status in ("complete", "stopped")}
    assert len(finished) >= 2
    with pytest.raises(UserInputError, match="--resume"):
        tune(data, tiny_space(), trials=4, runner=TuneRunner(tmp_path, progress=False))
    resumed = tune(data, tiny_space(), trials=4, seed=2, grace_period=2,
                   runner=TuneRunner(tmp_path, resume=True, progress=False))
    assert len(resumed.trials) == 4 and len({t.trial_id for t in resumed.trials}) == 4
    again = {t.trial_id: t.rmse for t in resumed.trials}
    assert all(again[k] == v for k, v in finished.items())  # finished trials kept, not rerun
    assert {t.status for t in resumed.trials} <= {"complete", "stopped"}


def test_resume_without_a_search_is_an_error(ray_session, data, tmp_path):
    data, absorbance = data
    with pytest.raises(UserInputError, match="no search to resume"):
        tune(data, tiny_space(), trials=2, runner=TuneRunner(tmp_path, resume=True))


def test_a_config_that_cannot_run_is_rejected_with_a_reason_not_trained(data):
    data, absorbance = data
    space = tiny_space(kernel_size=Int(2, 40))
    params = space.sample(np.random.default_rng(0))
    params.update({"n_conv_blocks": 1, "conv0_kernel_size": 40, "conv0_padding": "valid"})
    reports = []
    run_trial(params, data, space, report=lambda metrics, write=None: reports.append((metrics, write)))
    assert len(reports) == 1
    metrics, write = reports[0]
    assert metrics["status"] == "rejected" and math.isinf(metrics["rmse"]) and write is None
    assert "shrinks a spectrum of 24 values to nothing" in metrics["reason"]


def test_complete_trial_reports_every_epoch_then_a_checkpoint(data, tmp_path):
    data, absorbance = data
    space = tiny_space()
    params = space.sample(np.random.default_rng(3))
    reports = []
    run_trial(params, data, space, report=lambda metrics, write=None: reports.append((metrics, write)))
    assert [m["epoch"] for m, _ in reports] == list(range(1, EPOCHS + 1))
    assert [m["complete"] for m, _ in reports] == [False] * (EPOCHS - 1) + [True]
    final, write = reports[-1]
    cv = cross_validate(data.X, data.y, *space.to_config(params), data.folds)
    assert final["rmse"] == pytest.approx(cv.mean_rmse, rel=1e-6)
    write(tmp_path)
    np.testing.assert_allclose(load_model(tmp_path / "model").predict(absorbance), cv.ensemble().predict(data.X),
                               rtol=1e-5, atol=1e-6)


def test_bad_input_is_a_clear_error(data):
    data, absorbance = data
    X, y = data.X, data.y.copy()
    y[5] = np.nan
    with pytest.raises(UserInputError, match="missing \\(NaN\\).*first at row 5"):
        TuneData.make(X, y)
    with pytest.raises(UserInputError, match="cannot be split into 10 folds"):
        TuneData.make(X[:7], data.y[:7], folds=10)
    with pytest.raises(UserInputError, match="missing parameter"):
        SearchSpace({})
    with pytest.raises(UserInputError, match="low 5 > high 2"):
        tiny_space(kernel_size=Int(5, 2))
    contradictory = tiny_space(n_conv_blocks=Int(1, 2), kernel_size=Int(30, 40), padding=Categorical(("valid",)))
    with pytest.raises(UserInputError, match="none of 200 sampled configs can run on 24 bands"):
        check_space(contradictory, 24)


def test_ray_address_that_does_not_answer():
    start = time.perf_counter()
    with pytest.raises(UserInputError, match="no Ray cluster answers"):
        init(address="127.0.0.1:1", timeout_s=2)
    assert time.perf_counter() - start < 10
    with pytest.raises(UserInputError, match="expected HOST:PORT"):
        init(address="nonsense")


def test_gpu_request_without_gpus(ray_session):
    with pytest.raises(UserInputError, match="has 0 GPU"):
        trial_resources(1, 0.25)
    with pytest.warns(UserWarning, match="run on CPU"):
        assert trial_resources(1, 0.25, allow_cpu_fallback=True) == (1.0, 0.0)
    assert trial_resources(1, 0) == (1.0, 0.0)
    warned = []
    assert trial_resources(2, 0.5, allow_cpu_fallback=True, warn=warned.append) == (2.0, 0.0)
    assert warned == ["warning: --gpus-per-trial 0.5: the Ray cluster has no GPU; the trials run on CPU (--cpu-fallback)"]
    with pytest.raises(UserInputError, match="--cpus-per-trial 3: no node of the Ray cluster has that many CPUs"):
        trial_resources(3, 0)  # the session's Ray has 2 CPUs


def test_cli_tune_bad_input_exits_2_and_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from dtl_dist.cli import app
    from dtl_dist.library import SpectralLibrary

    rng = np.random.default_rng(0)
    soc = rng.uniform(1, 3, 12)
    soc[4] = np.nan
    SpectralLibrary.create(tmp_path / "site.zarr", rng.uniform(0.2, 1.0, (12, 24)), np.arange(400.0, 640.0, 10.0),
                           [f"s{i}" for i in range(12)], targets={"soc": soc})
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["tune", "--data", str(tmp_path / "site.zarr"), "--out", str(out), "--folds", "3"])
    assert result.exit_code == 2 and "missing (NaN)" in result.output and not out.exists()
    result = CliRunner().invoke(app, ["tune", "--data", str(tmp_path / "nope.zarr"), "--out", str(out)])
    assert result.exit_code == 2 and "no such spectral library store" in result.output and not out.exists()


def test_ray_tune_domains_stay_inside_the_space():
    space = default_space()
    domains = param_space(space)
    assert domains.keys() == space.params.keys()
    for _ in range(20):
        flat = {name: domain.sample() for name, domain in domains.items()}
        flat = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in flat.items()}
        assert all(space.params[k].contains(v) for k, v in space.active(flat).items())
        space.to_config(flat)


def test_a_trial_whose_ray_worker_is_killed_past_its_retries_is_marked_failed(ray_session, one_torch_thread, data,
                                                                                tmp_path):
    """A Ray worker SIGKILLed mid-trial with no retries left: that trial is an error trial ("worker lost") beside
    the others, which finish; a rerun trains it and the search equals an unbroken in-process one. (A kill within
    the retries is survived by the study: test_study's kill test.)"""
    from conftest import KillWhenRunning
    from dtl_dist.engines.ray import map_blocks
    from dtl_dist.nn.search import CandidateRunner

    data, _ = data
    space = tiny_space(max_epochs=Int(40, 40), patience=Int(40, 40))  # trials of ~1 s: time to be killed in

    def search(storage, map_fn=None):
        runner = CandidateRunner(tmp_path / storage, **({} if map_fn is None else {"map_blocks": map_fn}))
        result = tune(data, space, trials=2, runner=runner, seed=4)
        return {t.trial_id: (t.status, t.rmse, t.reason) for t in result.trials}

    unbroken = search("serial")
    assert [s for s, _, _ in unbroken.values()] == ["complete"] * 2
    killer = KillWhenRunning("ray::run_task")
    lost = search("lost", map_blocks(retries=0))
    assert killer.killed is not None
    failed = [trial_id for trial_id, (status, _, _) in lost.items() if status == "error"]
    assert len(failed) == 1, lost
    assert lost[failed[0]][2].startswith("worker lost: WorkerCrashedError")
    assert sorted(s for s, _, _ in lost.values()) == ["complete", "error"]
    assert not (tmp_path / "lost" / failed[0] / "outcome.json").exists()
    rerun = search("lost", map_blocks(retries=0))  # reads the finished trial back, trains the lost one
    assert rerun.keys() == unbroken.keys()
    for trial_id, (status, rmse, _) in rerun.items():
        assert status == "complete" and rmse == pytest.approx(unbroken[trial_id][1], rel=1e-5)


class Recoveries(ray_tune.Callback):
    """Count the trials Tune restarted after an error (FailureConfig's retries)."""

    def __init__(self):
        self.recovered = []

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.recovered.append(trial.trial_id)


def test_a_tune_trial_whose_worker_is_killed_is_retried_by_the_failure_config(ray_session, one_torch_thread, data,
                                                                              tmp_path):
    """`dtl tune`'s path: the Ray actor training a Tune trial SIGKILLed mid-trial; TuneRunner's
    FailureConfig(max_failures=2) restarts it, and every trial completes with the 4-fold CV RMSE of its config
    trained in-process (with max_failures=0 the killed trial ends as an error)."""
    from conftest import KillWhenRunning

    data, _ = data
    space = tiny_space(max_epochs=Int(40, 40), patience=Int(40, 40))  # trials of ~1 s: time to be killed in
    recoveries = Recoveries()
    killer = KillWhenRunning("ray::ImplicitFunc.train")
    result = tune(data, space, trials=2, seed=4, grace_period=40, runner=TuneRunner(
        tmp_path, max_concurrent=1, progress=False, callbacks=[recoveries]))
    assert killer.killed is not None
    assert len(recoveries.recovered) == 1
    assert [t.status for t in result.trials] == ["complete"] * 2
    for t in result.trials:
        cnn, train = space.to_config(t.params, seed=4)
        assert t.rmse == pytest.approx(cross_validate(data.X, data.y, cnn, train, data.folds).mean_rmse, rel=1e-5)
