"""Shared test fixtures: real spectra (LimeSoDa from its package; user files from DTL_DATA), one Dask
LocalCluster and one local Ray runtime."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

# Quiet, loopback-only Ray and Dask (ENVIRONMENT.md); set before either is imported.
for _key, _value in {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_memory_monitor_refresh_ms": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
    "DASK_LOGGING__DISTRIBUTED": "warning",
}.items():
    os.environ.setdefault(_key, _value)



@pytest.fixture(scope="session")
def dtl_data() -> Path:
    """The folder of user-provided data files (DTL_DATA) holding ``geeves_nsw/``; skip without it."""
    value = os.environ.get("DTL_DATA")
    if not value or not (Path(value) / "geeves_nsw").is_dir():
        pytest.skip("needs DTL_DATA: a folder holding geeves_nsw/datsoilspc.npz (CI points it at the offline copy of the data)")
    return Path(value)


@functools.cache
def limesoda_site(site: str) -> dict:
    """A LimeSoDa site straight from the ``limesoda`` package: reflectance % spectra ``X``, ``wavelengths`` (nm)
    and the carbon column ``y`` as published (SOC or SOM, %)."""
    import LimeSoDa
    import numpy as np

    frame = LimeSoDa.load_dataset(site)["Dataset"]
    bands = [c for c in frame.columns if str(c).startswith("wl_")]
    target = next(c for c in frame.columns if c in ("SOC_target", "SOM_target"))
    return {"X": frame[bands].to_numpy(np.float64), "wavelengths": np.array([float(c[3:]) for c in bands]),
            "y": frame[target].to_numpy(np.float64), "target": target.split("_")[0]}


def synthetic_stores(folder: Path, library_n: int, site_n: int, n_local: int = 20) -> Path:
    """``folder`` with a synthetic library (``lib.zarr``, 400-2500 nm every 20 nm) and a site (``site.zarr``)
    split by Kennard-Stone into ``n_local`` labelled samples, as `dtl synth` and `dtl select-local` write them."""
    from dtl_dist.library.synthetic import write_library, write_site
    from dtl_dist.spectra.grid import make_grid
    from dtl_dist.study.select_local import select_local

    grid = make_grid(400, 2500, 20)
    write_library(folder / "lib.zarr", library_n, seed=5, wavelengths=grid)
    write_site(folder / "site.zarr", site_n, seed=6, wavelengths=grid)
    select_local(folder / "site.zarr", n_local)
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one intra-op thread avoids OpenMP spin contention on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def dask_client():
    """A real two-worker Dask LocalCluster on loopback, shared by the session."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None, host="127.0.0.1",
                      processes=True) as cluster, Client(cluster) as client:
        yield client


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray runtime (2 CPUs), shared by the session (joined if a stage already started it)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20,
             ignore_reinit_error=True)
    yield ray
    ray.shutdown()


class KillWhenRunning:
    """SIGKILL the first descendant of process ``root`` (default: this one) whose title starts with ``title`` (a
    Ray worker sets ``ray::FUNCTION`` while it runs a task) as soon as one appears, from a watcher thread;
    ``killed``: its process id (None until then). With ``tree``, ``root`` and all its descendants go too (a whole
    Ray node: its ``ray start``, raylet and workers); ``tree_killed``: their process ids. Only descendants: other
    people's Ray on the machine is theirs."""

    def __init__(self, title: str, root: int | None = None, timeout_s: float = 120, tree: bool = False):
        import threading

        self.title, self.root, self.killed, self.timeout_s = title, root or os.getpid(), None, timeout_s
        self.tree, self.tree_killed = tree, []
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        import signal
        import time

        import psutil

        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            try:
                procs = psutil.Process(self.root).children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for proc in procs:
                try:
                    if (proc.cmdline() or [""])[0].startswith(self.title):
                        os.kill(proc.pid, signal.SIGKILL)
                        self.killed = proc.pid
                        break
                except psutil.Error:
                    continue
            if self.killed is not None:
                for pid in [self.root, *(p.pid for p in procs)] if self.tree else ():
                    try:
                        os.kill(pid, signal.SIGKILL)
                        self.tree_killed.append(pid)
                    except ProcessLookupError:
                        pass
                return
            time.sleep(0.01)
