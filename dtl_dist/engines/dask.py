"""Dask engine: a Client from a LocalCluster, a scheduler file, an address or dask-mpi, and a
``map_blocks`` that scatters an algorithm's blocks over it (paper section 2.3.2 ran RS-LOCAL-v2.0 on
50 cores; this is how we spread it over nodes).

Blocks travel as small tasks; what every block needs (``shared``) is broadcast to the workers once per
object, not with every task, and large arrays are read by the workers themselves (e.g.
:class:`dtl_dist.library.LibraryRef`). Results come back in block order, so a distributed run gives the
same answer as the in-process one. A task on a worker that dies is re-run on another.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

import dask
from distributed import Client, get_worker

from dtl_dist.errors import UserInputError
from dtl_dist.mapping import with_torch_threads

MPI_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
"""Environment variables through which MPI launchers announce the number of ranks."""


def under_mpiexec() -> bool:
    """True when this process is one of several ranks started by an MPI launcher."""
    for name in MPI_SIZE_VARIABLES:
        if int(os.environ.get(name, "1") or 1) > 1:
            return True
    return False


class InWorker:
    """``fn`` run as a task with torch limited to the worker's own threads (:func:`with_torch_threads`)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return with_torch_threads(self.fn, max(1, int(get_worker().state.nthreads)), *args)


def client(scheduler_file=None, address=None, mpi: bool = False, n_workers: int | None = None, *,
           timeout: str = "10s", memory_limit: str = "4GB", interface: str | None = None) -> Client:
    """A Dask client for one of the supported deployments.

    Parameters
    ----------
    scheduler_file : join the cluster whose scheduler wrote this file (``dask scheduler --scheduler-file``).
    address : join the scheduler at this address (``tcp://host:8786``).
    mpi : start with dask-mpi (rank 0 scheduler, rank 1 runs the rest of the program, others are workers);
        also chosen automatically when started under ``mpiexec`` with more than one rank. Ranks other than
        1 do not return from this call.
    n_workers : workers of the embedded LocalCluster (default 2, one thread each).
    timeout : how long to try to reach an existing scheduler.
    memory_limit : per worker (LocalCluster and dask-mpi).
    interface : network interface for dask-mpi (e.g. "ib0"; "lo" on a single machine).

    Raises
    ------
    UserInputError
        If the scheduler file is missing or the scheduler cannot be reached.
    """
    if sum(bool(x) for x in (scheduler_file, address, mpi)) > 1:
        raise UserInputError("give at most one of --scheduler-file, --address and --mpi")
    if mpi or (not scheduler_file and not address and under_mpiexec()):
        from dask_mpi import initialize

        # the scheduler's HTTP server (health, metrics) runs even without a dashboard: a free port, not 8787
        if not initialize(nthreads=1, memory_limit=memory_limit, dashboard=False, dashboard_address=":0",
                          interface=interface, exit=False):
            sys.exit(0)  # scheduler or worker rank: the cluster was shut down
        atexit.register(_end_mpi_cluster, timeout)
        return _connect(None, timeout, "the dask-mpi scheduler (rank 0)")
    if scheduler_file:
        if not Path(scheduler_file).is_file():
            raise UserInputError(f"--scheduler-file {scheduler_file}: no such file; start the scheduler first "
                                 "(dask scheduler --scheduler-file FILE)")
        return _connect({"scheduler_file": str(scheduler_file)}, timeout, f"the scheduler in {scheduler_file}")
    if address:
        return _connect({"address": address}, timeout, f"the scheduler at {address}")
    # dask's MALLOC_TRIM_THRESHOLD_ for worker processes also turns off glibc's dynamic mmap threshold: every
    # freed PLS chunk (about 10 MB) goes back to the OS and is page-faulted in again: scoring at half speed
    environ = {key: value for key, value in dask.config.get("distributed.nanny.pre-spawn-environ").items()
               if key != "MALLOC_TRIM_THRESHOLD_"}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        return Client(n_workers=n_workers or 2, threads_per_worker=1, processes=True, dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, worker_dashboard_address=None,
                      host="127.0.0.1", memory_limit=memory_limit, set_as_default=False)


def _end_mpi_cluster(timeout: str) -> None:
    """At the client rank's exit, however it exits: shut the scheduler and workers down, or abort the MPI job
    when the scheduler cannot be reached, so that no rank is left waiting and ``mpiexec`` returns."""
    try:
        with Client(timeout=timeout, set_as_default=False) as c:
            c.shutdown()
    except Exception:  # noqa: BLE001 - any failure here would leave the other ranks running forever
        from mpi4py import MPI

        MPI.COMM_WORLD.Abort(1)


def _connect(kwargs, timeout, what) -> Client:
    try:
        return Client(**(kwargs or {}), timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise UserInputError(f"cannot reach {what} within {timeout}: {exc}") from None


def _identity(obj):
    return obj


def map_blocks(client: Client, *, retries: int = 2, workers=None):
    """A ``map_blocks(fn, blocks, shared=()) -> list`` running ``fn(block, *shared)`` as one task per block
    on ``client``.

    Each ``shared`` object becomes one task holding it, sent once and reused while later calls pass the
    same object (e.g. a search's constant context; it must not be modified in between): a worker fetches
    it once from a peer instead of receiving it with every block. Results are gathered in block order. A
    task that raises is retried ``retries`` times; a task whose worker dies is rescheduled on another
    worker by the scheduler, which also recomputes a shared object lost with it (unlike scattered data).
    ``workers`` (addresses) restricts the tasks to some of the cluster's workers.
    """
    sent: dict = {}  # id(obj) -> (obj, future): holding obj keeps its id from being reused

    def run(fn, blocks, shared=()) -> list:
        blocks = list(blocks)
        futures = []
        for obj in shared:
            if id(obj) not in sent:
                sent[id(obj)] = (obj, client.submit(_identity, obj, pure=False, workers=workers))
            futures.append(sent[id(obj)][1])
        for key in set(sent) - {id(obj) for obj in shared}:
            sent.pop(key)[1].release()
        tasks = client.map(InWorker(fn), blocks, *([f] * len(blocks) for f in futures), pure=False,
                           retries=retries, workers=workers)
        return client.gather(tasks)

    return run


def library_array(library):
    """A library's spectra as a dask array, chunked by rows as stored (read lazily from Zarr by the workers)."""
    import dask.array as da
    import zarr

    array = da.from_zarr(zarr.open_array(str(library.path / "spectra"), mode="r"))
    return array if library.index is None else array[library.index]
