"""``dtl rslocal`` under ``mpiexec -n 4`` starts Dask with dask-mpi (rank 0 scheduler, rank 1 client, ranks 2-3
workers) and selects the same samples as the in-process run (issue 3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from dtl_dist.cli import app
from dtl_dist.library.synthetic import write_library, write_site
from dtl_dist.spectra.grid import make_grid
from dtl_dist.study.select_local import select_local

OPTIONS = ["--k", "40", "--subset", "40", "--b", "8", "--ncomp", "4", "--seed", "7", "--shard-rows", "250"]  # 4 shards


def test_mpiexec_four_ranks_selects_as_in_process(tmp_path):
    wl = make_grid(400, 2500, 50)
    write_library(tmp_path / "lib.zarr", 1000, seed=5, wavelengths=wl)
    write_site(tmp_path / "site.zarr", 50, seed=6, wavelengths=wl)
    select_local(tmp_path / "site.zarr", 20)
    stores = ["--library", str(tmp_path / "lib.zarr"), "--site", str(tmp_path / "site.zarr")]

    serial = CliRunner().invoke(app, ["rslocal", *stores, "--out", str(tmp_path / "serial"), *OPTIONS])
    assert serial.exit_code == 0, serial.output

    mpiexec = Path(sys.executable).parent / "mpiexec"
    env = os.environ | {"DASK_LOGGING__DISTRIBUTED": "warning"}
    proc = subprocess.run(
        [str(mpiexec), "-n", "4", sys.executable, "-m", "dtl_dist.cli", "rslocal", *stores,
         "--out", str(tmp_path / "mpi"), *OPTIONS],  # no --mpi: detected from the launcher
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("selected ") == 1  # only the client rank reports
    assert (tmp_path / "mpi" / "selected.csv").read_text() == (tmp_path / "serial" / "selected.csv").read_text()
    assert (tmp_path / "mpi" / "trace.csv").read_text() == (tmp_path / "serial" / "trace.csv").read_text()
