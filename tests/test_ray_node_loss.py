"""A Ray worker node stopped during a CNN search (issue 17, item 3): two real Ray nodes on loopback
(cluster/local/ray_nodes.py), the trials of a search handed to the nodes in turn; every process of the second
node (its raylet and the worker running a trial) SIGKILLed while it trains. The search finishes, the lost
trial runs again on the head node, and the trial table equals an unbroken in-process search's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dtl_dist.nn.search import CandidateRunner, tune
from dtl_dist.nn.space import Int

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "cluster" / "local"))
from ray_nodes import LoopbackRay  # noqa: E402

DRIVER = """
import json, sys
sys.path.insert(0, {tests!r})
from dtl_dist.engines import ray as ray_engine
from dtl_dist.engines.ray import map_blocks
from dtl_dist.nn.search import CandidateRunner, tune
from test_search import search_data, tiny_space
from dtl_dist.nn.space import Int
ray = ray_engine.init({address!r})
records = []
runner = CandidateRunner({storage!r}, map_blocks=map_blocks(on_task=records.append))
result = tune(search_data()[0], tiny_space(max_epochs=Int(40, 40), patience=Int(40, 40)), trials=2, runner=runner,
              seed=4)
alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
open({report!r}, "w").write(json.dumps({{"trials": {{t.trial_id: [t.status, t.rmse, t.reason] for t in result.trials}},
                  "nodes": [r["node"] for r in records], "alive": alive}}))
"""  # the report goes to a file: the driver's stdout also carries the raylets' log lines


def test_a_ray_node_stopped_mid_search_loses_no_trial(one_torch_thread, tmp_path, monkeypatch):
    from conftest import KillWhenRunning
    from test_search import search_data, tiny_space

    # a node's death is noticed within ~2 s (Ray's default health check takes ~30 s)
    monkeypatch.setenv("RAY_health_check_period_ms", "500")
    monkeypatch.setenv("RAY_health_check_failure_threshold", "4")
    space = tiny_space(max_epochs=Int(40, 40), patience=Int(40, 40))  # trials of ~1 s: time to be stopped in
    unbroken = tune(search_data()[0], space, trials=2, runner=CandidateRunner(tmp_path / "serial"), seed=4)
    with LoopbackRay(nodes=2, cpus=1) as cluster:
        # stop the whole second node (its `ray start`, raylet, workers) once it trains a trial
        killer = KillWhenRunning("ray::run_task", root=cluster.procs[1].pid, tree=True)
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER.format(tests=str(ROOT / "tests"), address=cluster.address,
                                                  storage=str(tmp_path / "ray"), report=str(tmp_path / "report.json"))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        _, err = driver.communicate(timeout=180)
    assert killer.tree_killed, "no trial ran on the second node"
    assert driver.returncode == 0, err[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    expected = {t.trial_id: t.rmse for t in unbroken.trials}
    assert report["trials"].keys() == expected.keys()
    for trial_id, (status, rmse, reason) in report["trials"].items():  # with no retry: an error trial
        assert status == "complete" and not reason, (trial_id, reason)
        assert rmse == pytest.approx(expected[trial_id], rel=1e-5)
    assert len(report["alive"]) == 1  # the second node is gone
    assert report["nodes"] == report["alive"] * 2  # both trials' finished runs were on the head node
