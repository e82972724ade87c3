"""benchmarks/gpu_check.sh --dry-run (issue 19): the GPU check's code paths on the CPU at tiny sizes, with a local
Ray of one logical GPU, so the script is ready when a GPU node is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1000)
def test_gpu_check_dry_run_writes_every_figure(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "DTL_PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "dry-run" and report["versions"]["torch"]
    pls = report["pls"]
    assert pls["device_fits_per_s"] > 0 and pls["cpu_compiled_fits_per_s"] > 0
    assert pls["max_abs_score_diff"] < 1e-3 * pls["score_scale"]  # the batched and the compiled kernel agree
    assert [s["gpus_per_trial"] for s in report["search"]] == [0.25, 0.125]
    for search in report["search"]:  # every trial completed, given the logical GPU, on the CPU (no CUDA here)
        assert search["complete"] == search["trials"] and search["trials_per_gpu_hour"] > 0
        assert search["gpu_ids"] == ["0"] and search["devices"] == ["cpu"]
    stage = report["stage"]
    assert {"Local", "Global", "DTL-I_g"} <= set(stage["stage_s"]) and stage["devices"] == ["cpu"]
    assert stage["tasks"] > 0 and stage["reloaded_prediction_finite"]
