"""Shared test fixtures: the real data in ../shared/data, one Dask LocalCluster and one local Ray runtime."""

from __future__ import annotations

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

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The offline copies of real soil spectra (../shared/data beside the repository)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


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
