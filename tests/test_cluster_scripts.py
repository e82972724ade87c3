"""The SLURM and PBS job scripts of cluster/, run end to end on the fake cluster of cluster/local (issue 10):
RS-LOCAL on two fake CPU nodes (srun / mpiexec + dask-mpi) selects what the in-process run selects, a 1D-CNN
search runs on a two-node Ray cluster, the study job chain (afterok) ends with metrics.csv, and bad input
fails fast with the reason and exit code 2. Real sbatch-like scheduling, real mpiexec ranks, real Dask and Ray.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import synthetic_stores
from dtl_dist.cli import app
from dtl_dist.study.task_log import read_tasks

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
HARNESS = CLUSTER / "local" / "fakecluster.py"
SCRIPTS = sorted([*CLUSTER.glob("slurm/*"), *CLUSTER.glob("pbs/*"), CLUSTER / "common.sh",
                  *CLUSTER.glob("local/bin/*")])
RSLOCAL_OPTS = "--k 20 --subset 20 --b 4 --ncomp 3 --seed 1 --shard-rows 100"  # 4 shards on the 2 fake nodes
STUDY_OPTS = "--trials 1 --max-epochs 3 --cv-folds 2 --inner-folds 2 --k 20 --subset 20 --b 4 --ncomp 3"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return synthetic_stores(tmp_path_factory.mktemp("cluster_stores"), 400, 60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path, stores):
    """A fresh two-node fake cluster (1 CPU, 0 GPUs per node); every job and process it started is ended after
    the test, however the test ends."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DTL_", "SLURM_", "PBS_"))}
    env |= {
        "DTL_LOCAL_CLUSTER": str(tmp_path / "cluster"), "DTL_LOCAL_NODES": "2", "DTL_LOCAL_CPUS_PER_NODE": "1",
        "PATH": f"{CLUSTER / 'local' / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        "DTL_VENV": str(Path(sys.executable).parent.parent), "PYTHONPATH": str(ROOT), "DTL_CLUSTER_DIR": str(CLUSTER),
        "DTL_INTERFACE": "lo", "DTL_WAIT_S": "120", "DTL_RAY_PORT": str(free_port()),
        "DTL_LIBRARY": str(stores / "lib.zarr"), "DTL_SITE": str(stores / "site.zarr"),
        # several Ray "nodes" on one machine need Ray's cluster mode; they listen on 127.0.0.11, 127.0.0.12
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_memory_monitor_refresh_ms": "0", "RAY_AIR_NEW_OUTPUT": "0",
    }
    yield FakeCluster(tmp_path, env)
    subprocess.run([sys.executable, str(HARNESS), "shutdown"], env=env, timeout=60, check=False)


class FakeCluster:
    def __init__(self, folder: Path, env: dict):
        self.folder, self.env = folder, env

    def submit(self, command: list[str], **variables) -> list[str]:
        """Run a submit command (sbatch, qsub or a chain script) in the test folder; the job ids it printed."""
        proc = subprocess.run(command, cwd=self.folder, env=self.env | variables, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        return [word.split(".")[0] for word in proc.stdout.replace(",", " ").replace("(", " ").split()
                if word.split(".")[0].isdigit()]

    def wait(self, ids: list[str], timeout: float = 600) -> dict:
        subprocess.run([sys.executable, str(HARNESS), "wait", "--timeout", str(timeout), *ids], env=self.env,
                       capture_output=True, text=True, timeout=timeout + 30, check=False)
        return {i: self.record(i) for i in ids}

    def record(self, job_id: str) -> dict:
        return json.loads((self.folder / "cluster" / "jobs" / f"{job_id}.json").read_text())

    def log(self, job_id: str) -> str:
        return Path(self.record(job_id)["output"]).read_text()


def test_every_script_parses_and_passes_shellcheck():
    for script in SCRIPTS:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"
    if shutil.which("shellcheck") is None:
        pytest.skip("bash -n passed; shellcheck is not installed (apt-get install shellcheck)")
    proc = subprocess.run(["shellcheck", "-x", "-S", "style", *map(str, SCRIPTS)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:]


def _in_process_selection(stores: Path, out: Path) -> str:
    result = CliRunner().invoke(app, ["rslocal", "--library", str(stores / "lib.zarr"), "--site",
                                      str(stores / "site.zarr"), "--out", str(out), *RSLOCAL_OPTS.split()])
    assert result.exit_code == 0, result.output
    return (out / "selected.csv").read_text()


@pytest.mark.parametrize("scheduler, layout", [("slurm", "1 worker(s) x 2 thread(s)"),
                                               ("pbs", "2 worker(s) x 1 thread(s)")])
def test_rslocal_job_on_two_nodes_selects_as_in_process(cluster, stores, scheduler, layout):
    """Two fake nodes of 2 CPUs: one worker process with 2 threads per node (SLURM), two single-threaded worker
    processes per node (PBS)."""
    submit = (["sbatch", "--parsable", "--ntasks-per-node=1", "--cpus-per-task=2",
               str(CLUSTER / "slurm" / "rslocal.sbatch")] if scheduler == "slurm" else
              ["qsub", "-V", "-l", "select=2:ncpus=2:mpiprocs=2", str(CLUSTER / "pbs" / "rslocal.pbs")])
    (job,) = cluster.submit(submit, DTL_OUT=str(cluster.folder / "rs"), DTL_RSLOCAL_OPTS=RSLOCAL_OPTS,
                            DTL_LOCAL_CPUS_PER_NODE="2")
    record = cluster.wait([job], timeout=300)[job]
    log = cluster.log(job)
    assert record["state"] == "COMPLETED", log[-3000:]
    assert f"2 node(s) x {layout}" in log
    workers = 2 if scheduler == "slurm" else 4
    assert f"{workers} worker(s), 4 thread(s)" in log  # dask-mpi workers on both fake nodes
    serial = _in_process_selection(stores, cluster.folder / "serial")
    assert (cluster.folder / "rs" / "selected.csv").read_text() == serial
    assert not list(cluster.folder.glob("dtl-dask-*.json"))  # the scheduler file is removed


def test_cnn_search_on_a_two_node_ray_cluster(cluster, stores, tmp_path):
    """ray.sbatch in its `dtl tune` mode (ray.pbs runs in the PBS study chain below, started by the same
    common.sh)."""
    data = stores / "site.zarr"  # 60 samples with SOC: a small training store
    submit = ["sbatch", "--parsable", str(CLUSTER / "slurm" / "ray.sbatch")]
    (job,) = cluster.submit(submit, DTL_DATA=str(data), DTL_OUT=str(tmp_path / "search"), DTL_GPUS_PER_TRIAL="0",
                            DTL_CPUS_PER_TRIAL="1", DTL_TUNE_OPTS="--trials 1 --folds 2")
    record = cluster.wait([job], timeout=400)[job]
    log = cluster.log(job)
    assert record["state"] == "COMPLETED", log[-3000:]
    assert ": 2 node(s), 2 CPU(s)" in log  # the head on dtl-node1 and a worker on dtl-node2
    best = json.loads((tmp_path / "search" / "best_config.json").read_text())
    trials = pd.read_csv(tmp_path / "search" / "trials.csv")
    assert len(trials) == 1 and best["rmse"] == pytest.approx(trials.rmse.min())
    assert (tmp_path / "search" / "model").is_dir()
    assert log.count("dtl-local: stopped") == 2  # ray stop on each node, scoped to this job's Ray


@pytest.mark.parametrize("scheduler", ["slurm", "pbs"])
def test_study_job_chain_ends_with_metrics(cluster, scheduler, tmp_path):
    run = tmp_path / "study"
    # fake nodes with 2 logical GPUs: job 2 runs the CNN tasks at the scripts' default 0.25 GPUs each
    variables = dict(DTL_OUT=str(run), DTL_STUDY_OPTS=STUDY_OPTS, DTL_LOCAL_GPUS_PER_NODE="2", DTL_CPUS_PER_TRIAL="1")
    if scheduler == "slurm":
        ids = cluster.submit(["bash", str(CLUSTER / "slurm" / "study-chain.sh")],
                             DTL_SBATCH_OPTS="--ntasks-per-node=1 --cpus-per-task=1", **variables)
    else:
        ids = cluster.submit(["bash", str(CLUSTER / "pbs" / "study-chain.sh")], DTL_CPU_SELECT="select=2:ncpus=1:mpiprocs=1",
                             DTL_GPU_SELECT="select=2:ncpus=1:ngpus=2", **variables)
    ids = list(dict.fromkeys(ids))
    assert len(ids) == 3
    records = cluster.wait(ids, timeout=900)
    for job in ids:
        log = cluster.log(job)
        reasons = [line for line in log.splitlines() if "error" in line.lower() or "Traceback" in line]
        assert records[job]["state"] == "COMPLETED", "\n".join(reasons[-20:]) + "\n...\n" + log[-3000:]
    first, second, third = (records[j] for j in ids)
    assert first["end"] <= second["start"] and second["end"] <= third["start"]  # afterok, in order
    metrics = pd.read_csv(run / "metrics.csv")
    assert {"Local", "Global", "DTL-I_g", "DTL-R_g", "DTL-IR_g", "RS-LOCAL-PLS", "recommended"} <= set(metrics.model)
    assert json.loads((run / "study.json").read_text())["options"]["k"] == 20
    assert "stages of kinds rslocal, baseline done" in cluster.log(ids[0])
    assert cluster.log(ids[1]).count("dtl-local: stopped") == 2  # the Ray job stopped Ray on both nodes
    tasks = read_tasks(run)  # every CNN task of job 2 was given a (logical) GPU, on both nodes
    assert tasks and all(len(t["gpu_ids"]) == 1 for t in tasks) and len({t["node"] for t in tasks}) == 2
    assert (run / "report.html").is_file()  # the last job's dtl report


def test_bad_input_fails_fast_with_the_reason(cluster, tmp_path):
    slurm, pbs = CLUSTER / "slurm", CLUSTER / "pbs"
    rslocal = ["sbatch", "--parsable", "--ntasks-per-node=1", str(slurm / "rslocal.sbatch")]
    cases = [  # (submit command, variables, expected reason)
        (rslocal, {"DTL_LIBRARY": str(tmp_path / "missing.zarr")},
         f"library store {tmp_path / 'missing.zarr'} not found on dtl-node1"),
        (["sbatch", "--parsable", str(slurm / "rslocal.sbatch")], {},  # the script's 8 x 16 on 1-CPU nodes
         "DTL_WORKERS_PER_NODE=8 x DTL_THREADS=1: a node of this job has 1 CPU(s)"),
        (["qsub", "-V", "-l", "select=2", str(pbs / "ray.pbs")], {"DTL_GPUS_PER_TRIAL": "2"},
         "DTL_GPUS_PER_TRIAL=2: a node of this job has 0 GPU(s)"),
        (rslocal, {"DTL_INTERFACE": "no-such-nic0", "DTL_WAIT_S": "5"}, "did not appear within 5 s"),
        (["sbatch", "--parsable", str(slurm / "ray.sbatch")],
         {"DTL_DATA": str(cluster.env["DTL_LIBRARY"]), "DTL_GPUS_PER_TRIAL": "0", "DTL_CPUS_PER_NODE": "-1",
          "DTL_WAIT_S": "5"}, "no Ray head answered within 5 s"),
    ]
    for command, variables, reason in cases:
        (job,) = cluster.submit(command, DTL_OUT=str(tmp_path / "out"), **variables)
        record = cluster.wait([job], timeout=120)[job]
        log = cluster.log(job)
        assert record["state"] == "FAILED" and record["exit_code"] == 2, log[-2000:]
        # an error line (common.sh's dtl_fail and the CLI both print "error: ...") that gives the reason
        assert re.search(rf"^error: .*{re.escape(reason)}", log, re.M), log[-2000:]
        assert not (tmp_path / "out").exists()  # nothing written
    # a failed first job cancels the rest of a chain
    ids = list(dict.fromkeys(cluster.submit(["bash", str(slurm / "study-chain.sh")], DTL_OUT=str(tmp_path / "study"),
                                            DTL_LIBRARY=str(tmp_path / "missing.zarr"),
                                            DTL_SBATCH_OPTS="--ntasks-per-node=1")))
    records = cluster.wait(ids, timeout=120)
    assert [records[j]["state"] for j in ids] == ["FAILED", "CANCELLED", "CANCELLED"]
