"""How the engines are deployed (issue 10): dask-jobqueue from a YAML file (checked, its job scripts, and RS-LOCAL
with its workers as jobs of the fake SLURM cluster of cluster/local), Dask over TLS with a certificate made here,
Ray and Dask listening on loopback by default, and ``dtl wait`` failing with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dask
import pytest
import yaml
from typer.testing import CliRunner

from conftest import synthetic_stores
from dtl_dist.cli import app
from dtl_dist.engines import dask as dask_engine
from dtl_dist.errors import UserInputError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "cluster" / "jobqueue"
OPTIONS = ["--k", "20", "--subset", "20", "--b", "4", "--ncomp", "3", "--seed", "1", "--shard-rows", "100"]  # 3 shards


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return synthetic_stores(tmp_path_factory.mktemp("deploy"), 300, 50)


def _yaml(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "jobqueue.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("name, lines", [
    ("slurm", ["#SBATCH -A pawsey0000", "#SBATCH -p work", "#SBATCH -t 01:00:00", "#SBATCH --exclusive",
               "--nthreads 16", "--nworkers 8", "--no-nanny", "source $MYSOFTWARE/dtl-dist/.venv/bin/activate"]),
    ("pbs", ["#PBS -A PROJECT", "#PBS -q workq", "#PBS -l select=1:ncpus=128:mem=230GB", "#PBS -l walltime=01:00:00",
             "--nthreads 16", "--nworkers 8", "--no-nanny"]),
])
def test_example_files_give_the_expected_job_scripts(name, lines, tmp_path):
    spec = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    spec["cluster"]["interface"] = "lo"  # the example's network does not exist here
    loaded = dask_engine.load_jobqueue(_yaml(tmp_path, spec))
    assert loaded.jobs == 2 and loaded.scheduler == name
    cluster = dask_engine.jobqueue_cluster(loaded)
    try:
        script = cluster.job_script()
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert cluster.dashboard_link.startswith("http://127.0.0.1:")  # dashboard on loopback: SSH tunnel
    finally:
        cluster.close()
    for line in lines:
        assert line in script, (line, script)


@pytest.mark.parametrize("spec, message", [
    ({"scheduler": "slurm", "jobs": 1, "cluster": {}, "worker": 3}, "unknown key 'worker'; expected scheduler"),
    ({"scheduler": "slurm", "jobs": 1, "cluster": {"cores": 4, "ncpus": 4}},
     "unknown key 'ncpus' in cluster; expected keyword arguments of SLURMCluster: account,"),
    ({"scheduler": "lsf", "jobs": 1}, "scheduler 'lsf'; expected slurm or pbs"),
    ({"scheduler": "pbs", "cluster": {}}, "give either jobs"),
    ({"scheduler": "pbs", "jobs": 0}, "jobs 0; expected an integer >= 1"),
    ({"scheduler": "pbs", "jobs": 1, "start_timeout": "30min"}, "start_timeout '30min'; expected a duration"),
])
def test_a_bad_jobqueue_file_is_one_line_exit_2_and_nothing_written(stores, tmp_path, spec, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["rslocal", "--library", str(stores / "lib.zarr"), "--site",
                                      str(stores / "site.zarr"), "--out", str(out), "--jobqueue",
                                      str(_yaml(tmp_path, spec)), *OPTIONS])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists()


@pytest.mark.slow
def test_rslocal_with_jobqueue_workers_on_the_fake_cluster(stores, tmp_path):
    """dask-jobqueue submits two worker jobs with the fake cluster's sbatch, RS-LOCAL runs on them and selects what
    the in-process run selects, and the jobs are cancelled (scancel) when it ends."""
    spec = {"scheduler": "slurm", "jobs": 2, "start_timeout": "2m",
            "cluster": {"cores": 1, "processes": 1, "memory": "2GB", "walltime": "00:10:00", "interface": "lo",
                        "nanny": False}}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DTL_", "SLURM_", "PBS_"))}
    env |= {"DTL_LOCAL_CLUSTER": str(tmp_path / "cluster"), "PYTHONPATH": str(ROOT),
            "PATH": f"{ROOT / 'cluster' / 'local' / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                    f"{env['PATH']}"}
    harness = [sys.executable, str(ROOT / "cluster" / "local" / "fakecluster.py")]
    try:
        proc = subprocess.run([sys.executable, "-m", "dtl_dist.cli", "rslocal", "--library", str(stores / "lib.zarr"),
                               "--site", str(stores / "site.zarr"), "--out", str(tmp_path / "jq"), "--jobqueue",
                               str(_yaml(tmp_path, spec)), *OPTIONS], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        jobs = subprocess.run([*harness, "sacct"], env=env, capture_output=True, text=True, timeout=30).stdout.split()
    finally:
        subprocess.run([*harness, "shutdown"], env=env, timeout=60, check=False)
    assert [line.split("|")[1] for line in jobs] == ["dask-worker", "dask-worker"]
    assert all(line.split("|")[2] == "CANCELLED" for line in jobs)  # closed with the client
    serial = CliRunner().invoke(app, ["rslocal", "--library", str(stores / "lib.zarr"), "--site",
                                      str(stores / "site.zarr"), "--out", str(tmp_path / "serial"), *OPTIONS])
    assert serial.exit_code == 0, serial.output
    assert (tmp_path / "jq" / "selected.csv").read_text() == (tmp_path / "serial" / "selected.csv").read_text()


def _square(block):
    return block * block


def test_dask_over_tls_with_a_self_signed_certificate(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=dtl-dist-test", "-addext", "basicConstraints=critical,CA:TRUE"],
                   check=True, capture_output=True, timeout=60)
    tls = {"distributed.comm.tls.ca-file": str(cert), "distributed.comm.require-encryption": True}
    for role in ("scheduler", "worker", "client"):
        tls |= {f"distributed.comm.tls.{role}.cert": str(cert), f"distributed.comm.tls.{role}.key": str(key)}
    with dask.config.set(tls):
        with dask_engine.client(n_workers=1, threads_per_worker=2) as client:
            address = client.scheduler.address
            assert address.startswith("tls://127.0.0.1:")
            assert dask_engine.map_blocks(client)(_square, [1, 2, 3]) == [1, 4, 9]
            joined = dask_engine.client(address=address, timeout="10s")  # a second client presents its certificate
            assert joined.submit(_square, 5).result() == 25
            joined.close()
    with pytest.raises(UserInputError, match="cannot reach the scheduler"):  # plain TCP is refused
        dask_engine.client(address=address.replace("tls://", "tcp://"), timeout="2s")


def test_a_local_ray_listens_on_loopback_only():
    code = ("from dtl_dist.engines import ray as engine; ray = engine.init(num_cpus=1); "
            "print(ray.nodes()[0]['NodeManagerAddress'], ray.get_runtime_context().gcs_address); ray.shutdown()")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    proc = subprocess.run([sys.executable, "-c", code], env=env | {"PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    node, gcs = proc.stdout.split()[-2:]
    assert node == "127.0.0.1" and gcs.startswith("127.0.0.1:")


def test_dask_local_cluster_and_single_host_mpi_listen_on_loopback():
    with dask_engine.client(n_workers=1) as client:
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert all(w.startswith("tcp://127.0.0.1:") for w in client.scheduler_info()["workers"])
    # dask-mpi under a real mpiexec on one host (rank 0 scheduler, rank 1 this code, ranks 2-3 workers)
    code = ("from dtl_dist.engines import dask as engine; c = engine.client(); c.wait_for_workers(2, timeout=60); "
            "print('ADDRESSES', c.scheduler.address, *c.scheduler_info(n_workers=-1)['workers'])")
    proc = subprocess.run([str(Path(sys.executable).parent / "mpiexec"), "-n", "4", sys.executable, "-c", code],
                          env=os.environ | {"PYTHONPATH": str(ROOT), "DASK_LOGGING__DISTRIBUTED": "warning"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [line] = [line for line in proc.stdout.splitlines() if line.startswith("ADDRESSES")]
    addresses = line.split()[1:]
    assert len(addresses) == 3 and all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses


def test_wait_reports_what_did_not_appear(tmp_path):
    missing = CliRunner().invoke(app, ["wait", "--scheduler-file", str(tmp_path / "s.json"), "--timeout", "1"])
    assert missing.exit_code == 2 and f"scheduler file {tmp_path / 's.json'} did not appear within 1 s" in missing.output
    ray = CliRunner().invoke(app, ["wait", "--ray-address", "127.0.0.1:1", "--timeout", "1"])
    assert ray.exit_code == 2 and "--ray-address 127.0.0.1:1: no Ray head answered within 1 s" in ray.output
    both = CliRunner().invoke(app, ["wait", "--timeout", "1"])
    assert both.exit_code == 2 and "give one of --scheduler-file and --ray-address" in both.output


def test_wait_counts_the_workers_of_a_running_cluster(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=None,
                      host="127.0.0.1", scheduler_kwargs={"scheduler_file": str(tmp_path / "s.json")}):
        assert dask_engine.wait_for_workers(tmp_path / "s.json", 2, 10) == 2
        with pytest.raises(UserInputError, match="2 of 3 Dask workers joined"):
            dask_engine.wait_for_workers(tmp_path / "s.json", 3, 2)
