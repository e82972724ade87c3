"""The Dask engine: RS-LOCAL selects the same samples on 1, 2 or 3 worker processes, on one worker process with
3 threads and on in-process threads as in-process, survives a killed worker, and reports an unreachable
scheduler clearly (issues 3 and 10, paper section 2.3.2)."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

from dtl_dist.engines import dask as dask_engine
from dtl_dist.errors import UserInputError
from dtl_dist.library import SpectralLibrary
from dtl_dist.library.synthetic import write_library, write_site
from dtl_dist.mapping import thread_map
from dtl_dist.select.rslocal import rslocal
from dtl_dist.spectra.grid import make_grid
from dtl_dist.spectra.preprocess import SNV

SEARCH = dict(k=40, subset=40, b=8, ncomp=4, seed=4, preprocess=SNV())


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    d = tmp_path_factory.mktemp("rslocal_dask")
    wl = make_grid(400, 2500, 50)
    lib = write_library(d / "lib.zarr", 1500, seed=3, wavelengths=wl)
    site = write_site(d / "site.zarr", 30, seed=4, wavelengths=wl)
    serial = rslocal(lib.spectra(), lib.target("soc"), site.spectra()[:20], site.target("soc")[:20], **SEARCH)
    return lib, site, serial


@pytest.fixture(scope="module")
def cluster():
    client = dask_engine.client(n_workers=3)
    yield client
    client.close()


def _run(lib: SpectralLibrary, site: SpectralLibrary, client, **kw):
    return rslocal(lib.ref(), lib.target("soc"), site.spectra()[:20], site.target("soc")[:20],
                   map_blocks=dask_engine.map_blocks(client, **kw.pop("engine", {})), **kw, **SEARCH)


@pytest.mark.parametrize("n_workers, block_size", [(1, 128), (2, 1024), (3, 256)])
def test_same_selection_on_any_number_of_workers(problem, cluster, n_workers, block_size):
    lib, site, serial = problem
    workers = sorted(cluster.scheduler_info()["workers"])[:n_workers]
    res = _run(lib, site, cluster, engine={"workers": workers}, block_size=block_size)
    assert np.array_equal(res.selected, serial.selected)
    assert res.trace == serial.trace


def test_same_selection_on_the_threads_of_one_worker_and_in_process(problem):
    lib, site, serial = problem
    with dask_engine.client(n_workers=1, threads_per_worker=3) as threaded:
        assert list(threaded.nthreads().values()) == [3]
        res = _run(lib, site, threaded, block_size=128)
    assert np.array_equal(res.selected, serial.selected) and res.trace == serial.trace
    for threads in (1, 3):
        local = rslocal(lib.ref(), lib.target("soc"), site.spectra()[:20], site.target("soc")[:20],
                        map_blocks=thread_map(threads), **SEARCH)
        assert np.array_equal(local.selected, serial.selected) and local.trace == serial.trace


def test_a_killed_worker_does_not_change_the_selection(problem, cluster):
    lib, site, serial = problem
    pids = cluster.run(os.getpid)
    victim = pids[sorted(pids)[0]]
    killed = threading.Event()

    def kill_during_next_iteration(state):
        if state.iteration == 3 and not killed.is_set():
            killed.set()
            threading.Timer(0.02, os.kill, (victim, signal.SIGKILL)).start()

    res = _run(lib, site, cluster, block_size=128, on_iteration=kill_during_next_iteration)
    assert killed.is_set()
    assert victim not in cluster.run(os.getpid).values()  # the nanny started a new worker process
    assert np.array_equal(res.selected, serial.selected)


def test_unreachable_scheduler_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="cannot reach the scheduler at tcp://127.0.0.1:1"):
        dask_engine.client(address="tcp://127.0.0.1:1", timeout="1s")
    with pytest.raises(UserInputError, match="no such file"):
        dask_engine.client(scheduler_file=tmp_path / "scheduler.json")
    with pytest.raises(UserInputError, match="at most one"):
        dask_engine.client(address="tcp://127.0.0.1:1", mpi=True)
