"""``dtl rslocal`` under ``mpiexec`` starts Dask with dask-mpi (rank 0 scheduler, rank 1 client, ranks 2+ workers,
no nanny) and selects the same samples as the in-process run (issue 3); a worker rank killed mid-search ends the
MPI job at once (the launcher ends every rank) and ``--resume`` selects the same samples (issue 17)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from dtl_dist.cli import app
from dtl_dist.library.synthetic import write_library, write_site
from dtl_dist.spectra.grid import make_grid
from dtl_dist.study.select_local import select_local

OPTIONS = ["--k", "40", "--subset", "40", "--b", "8", "--ncomp", "4", "--seed", "7", "--shard-rows", "250"]  # 4 shards
MPIEXEC = Path(sys.executable).parent / "mpiexec"
ENV = os.environ | {"DASK_LOGGING__DISTRIBUTED": "warning", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The stores and the in-process run's output folder."""
    folder = tmp_path_factory.mktemp("mpi")
    wl = make_grid(400, 2500, 50)
    write_library(folder / "lib.zarr", 1000, seed=5, wavelengths=wl)
    write_site(folder / "site.zarr", 50, seed=6, wavelengths=wl)
    select_local(folder / "site.zarr", 20)
    stores = ["--library", str(folder / "lib.zarr"), "--site", str(folder / "site.zarr")]
    result = CliRunner().invoke(app, ["rslocal", *stores, "--out", str(folder / "serial"), *OPTIONS])
    assert result.exit_code == 0, result.output
    return stores, folder / "serial"


def _mpi_rslocal(ranks: int, stores, out, *extra) -> list[str]:
    return [str(MPIEXEC), "-n", str(ranks), sys.executable, "-m", "dtl_dist.cli", "rslocal", *stores, "--out",
            str(out), *OPTIONS, *extra]  # no --mpi: detected from the launcher


def test_mpiexec_four_ranks_selects_as_in_process(serial, tmp_path):
    stores, reference = serial
    proc = subprocess.run(_mpi_rslocal(4, stores, tmp_path / "mpi"), capture_output=True, text=True, timeout=120,
                          env=ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("selected ") == 1  # only the client rank reports
    assert (tmp_path / "mpi" / "selected.csv").read_text() == (reference / "selected.csv").read_text()
    assert (tmp_path / "mpi" / "trace.csv").read_text() == (reference / "trace.csv").read_text()


def test_a_dask_mpi_worker_killed_mid_search_ends_the_job_and_resume_selects_the_same(serial, tmp_path):
    """SIGKILL of worker rank 3 once iteration 1's checkpoint is written: mpiexec ends every rank within seconds
    (no hang; MPICH's launcher does so even with -disable-auto-cleanup, so the Dask-level restart cannot run
    there), and `--resume` (here in-process) selects what the unbroken run did."""
    stores, reference = serial
    out = tmp_path / "mpi"
    proc = subprocess.Popen(_mpi_rslocal(5, stores, out, "--checkpoint-every", "0"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ENV, start_new_session=True)
    try:
        said = []
        for line in proc.stdout:
            said.append(line)
            if "rslocal: iteration 1," in line:
                break
        while not (out / "checkpoint.npz").is_file():  # written once iteration 1 ended (pytest-timeout guards)
            time.sleep(0.01)
        ranks = {p.environ().get("PMI_RANK"): p for p in psutil.Process(proc.pid).children(recursive=True)
                 if "dtl_dist.cli" in p.cmdline()}
        os.kill(ranks["3"].pid, signal.SIGKILL)
        killed = time.monotonic()
        said += proc.stdout.readlines()
        proc.wait(timeout=60)
        assert time.monotonic() - killed < 30 and proc.returncode != 0, "".join(said)[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        proc.stdout.close()
    assert (out / "checkpoint.npz").is_file() and not (out / "selected.csv").exists()
    resumed = CliRunner().invoke(app, ["rslocal", *stores, "--out", str(out), *OPTIONS, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert (out / "selected.csv").read_text() == (reference / "selected.csv").read_text()
    assert (out / "trace.csv").read_text() == (reference / "trace.csv").read_text()
