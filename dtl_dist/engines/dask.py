"""Dask engine: a Client from a LocalCluster, a scheduler file, an address, dask-mpi or dask-jobqueue, RS-LOCAL's
groups as actors on its workers (:class:`ShardEngine`; paper section 2.3.2 ran RS-LOCAL-v2.0 on 50 cores, this
is how we spread it over nodes), and a ``map_blocks`` that scatters an algorithm's blocks over it.

Blocks travel as small tasks; what every block needs (``shared``) is broadcast to the workers once per
object, not with every task, and large arrays are read by the workers themselves (e.g.
:class:`dtl_dist.library.LibraryRef`). Results come back in block order, so a distributed run gives the
same answer as the in-process one. A task on a worker that dies is re-run on another.

Layout. A worker runs one task per thread, each with one torch thread (:class:`InWorker`). RS-LOCAL's actor on
a worker scores on as many threads as the worker has and holds its share of the library once, so one worker
process per node with a thread per core holds one copy of its rows per node.

Security. A LocalCluster and a single-host dask-mpi cluster listen on loopback only; a multi-host dask-mpi
cluster needs the network interface named (``interface``). TLS comes from the Dask configuration
(``distributed.comm.tls.*``: CA file, scheduler/worker/client certificates and keys): when a CA file is
configured, clusters started here use ``tls://`` and clients present their certificate (cluster/README.md).
"""

from __future__ import annotations

import atexit
import inspect
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import dask
from distributed import Client
from distributed.client import FutureCancelledError

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
    """``fn`` run as a task with torch on one thread (:func:`dtl_dist.mapping.with_torch_threads`): a worker
    with T threads runs T tasks at once, each single-threaded, so results are the same for any worker layout
    and a node's cores are used by its worker threads, never oversubscribed."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return with_torch_threads(self.fn, 1, *args)


def client(scheduler_file=None, address=None, mpi: bool = False, n_workers: int | None = None, *,
           threads_per_worker: int = 1, jobqueue=None, timeout: str = "10s", memory_limit: str = "4GB",
           interface: str | None = None) -> Client:
    """A Dask client for one of the supported deployments.

    Parameters
    ----------
    scheduler_file : join the cluster whose scheduler wrote this file (``dask scheduler --scheduler-file``).
    address : join the scheduler at this address (``tcp://host:8786``).
    mpi : start with dask-mpi (rank 0 scheduler, rank 1 runs the rest of the program, others are workers);
        also chosen automatically when started under ``mpiexec`` with more than one rank. Ranks other than
        1 do not return from this call.
    n_workers : worker processes of the embedded LocalCluster (default 2).
    threads_per_worker : threads of each LocalCluster or dask-mpi worker (one task, one torch thread each).
    jobqueue : a dask-jobqueue YAML file (:func:`load_jobqueue`): the workers are batch jobs it submits.
    timeout : how long to try to reach an existing scheduler.
    memory_limit : per worker (LocalCluster and dask-mpi).
    interface : network interface for dask-mpi (e.g. "hsn0"); default loopback when all ranks share a host.

    Raises
    ------
    UserInputError
        If the scheduler file is missing, the scheduler cannot be reached, the jobqueue file is invalid, or
        dask-mpi ranks span hosts without an interface.
    """
    if sum(bool(x) for x in (scheduler_file, address, mpi, jobqueue)) > 1:
        raise UserInputError("give at most one of --scheduler-file, --address, --mpi and --jobqueue")
    if threads_per_worker < 1:
        raise UserInputError(f"--threads {threads_per_worker}: expected an integer >= 1")
    security = _security()
    if jobqueue:
        return _jobqueue_client(load_jobqueue(jobqueue), security)
    if mpi or (not scheduler_file and not address and under_mpiexec()):
        from dask_mpi import initialize

        # the scheduler's HTTP server (health, metrics) runs even without a dashboard: a free port, not 8787
        if not initialize(nthreads=threads_per_worker, memory_limit=memory_limit, dashboard=False,
                          dashboard_address=":0", interface=_mpi_interface(interface),
                          protocol="tls" if security else None, exit=False):
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
        return Client(n_workers=n_workers or 2, threads_per_worker=threads_per_worker, processes=True,
                      dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                      worker_dashboard_address=None, host="127.0.0.1", memory_limit=memory_limit,
                      protocol="tls://" if security else None, security=security, set_as_default=False)


def _security():
    """Dask ``Security`` from the configuration when a TLS CA file is configured, else None (plain TCP)."""
    if not dask.config.get("distributed.comm.tls.ca-file", None):
        return None
    from distributed.security import Security

    return Security()


def _mpi_interface(interface: str | None) -> str | None:
    """The dask-mpi network interface: as given, else loopback when every rank runs on this host."""
    if interface:
        return interface
    from mpi4py import MPI

    hosts = set(MPI.COMM_WORLD.allgather(socket.gethostname()))
    if len(hosts) > 1:
        raise UserInputError(f"--mpi: the ranks run on {len(hosts)} hosts; give the network interface the workers "
                             "share (--interface, e.g. hsn0 on Setonix, ib0 on InfiniBand clusters)")
    return "lo"


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
        return Client(**(kwargs or {}), timeout=timeout, security=_security(), set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise UserInputError(f"cannot reach {what} within {timeout}: {exc}") from None


def wait_for_workers(scheduler_file, n_workers: int, timeout_s: float) -> int:
    """Wait until the cluster of ``scheduler_file`` has ``n_workers`` workers (a job script's start-up check).

    Returns the number of worker threads. Raises :class:`UserInputError` naming what did not appear in time:
    the scheduler file, the scheduler, or the workers (with how many came).
    """
    import time

    deadline = time.monotonic() + timeout_s
    while not Path(scheduler_file).is_file():
        if time.monotonic() > deadline:
            raise UserInputError(f"scheduler file {scheduler_file} did not appear within {timeout_s:g} s; "
                                 "see the scheduler's log")
        time.sleep(0.5)
    left = max(1.0, deadline - time.monotonic())
    with _connect({"scheduler_file": str(scheduler_file)}, f"{left}s", f"the scheduler in {scheduler_file}") as c:
        try:
            c.wait_for_workers(n_workers, timeout=max(1.0, deadline - time.monotonic()))
        except TimeoutError:
            have = len(c.scheduler_info(n_workers=-1)["workers"])
            raise UserInputError(f"{have} of {n_workers} Dask workers joined {scheduler_file} within {timeout_s:g} s; "
                                 "see the workers' log") from None
        return sum(w["nthreads"] for w in c.scheduler_info(n_workers=-1)["workers"].values())


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


class ShardEngine:
    """RS-LOCAL's groups on a Dask cluster (:mod:`dtl_dist.select.shards`): per search, one
    :class:`~dtl_dist.select.shards.ShardSet` actor per worker, holding a contiguous range of the shards and
    scoring them on the worker's threads; the driver calls each actor a few times per iteration and only
    the scores, a few thousand ranked entries and small pools (merges) travel.

    A worker that leaves the cluster, an actor that cannot be reached, or an actor that Dask recreated
    without its state raise :class:`~dtl_dist.select.rslocal.WorkerLost` within ``poll`` seconds (the driver
    checks the workers while it waits); :func:`~dtl_dist.select.rslocal.rslocal` then restarts from its last
    checkpoint on the workers left. ``workers`` (addresses) restricts the actors to some of the workers;
    ``join_timeout`` is how long a (re)start waits for at least one worker.
    """

    def __init__(self, client: Client, *, workers=None, poll: float = 1.0, join_timeout: float = 60.0):
        self.client, self.workers, self.poll, self.join_timeout = client, workers, poll, join_timeout
        self.lost: set[str] = set()

    def alive(self) -> list[str]:
        """Workers to use: the cluster's (or those of ``workers``), less those lost (the scheduler may list a
        dead worker for a while)."""
        alive = set(self.client.scheduler_info(n_workers=-1)["workers"]) & set(self.client.nthreads())
        return sorted(w for w in alive - self.lost if self.workers is None or w in self.workers)

    def start(self, context, groups: dict, iteration: int, n_shards: int) -> "_ShardSession":
        import time

        from dtl_dist.select.rslocal import owner
        from dtl_dist.select.shards import ShardSet

        deadline = time.monotonic() + self.join_timeout
        while not (addresses := self.alive()):
            if time.monotonic() > deadline:
                raise UserInputError(f"RS-LOCAL: no Dask worker joined within {self.join_timeout:g} s")
            time.sleep(self.poll)
        nthreads = self.client.nthreads()
        session = _ShardSession(self, {g: addresses[owner(g, len(addresses), n_shards)] for g in groups},
                                {g: len(rows) for g, (rows, _) in groups.items()})
        futures = {}
        for a in sorted(set(session.where.values())):
            # the groups' rows and targets (N / workers of each) go straight to their worker, not in the graph
            [mine] = self.client.scatter([{g: groups[g] for g in groups if session.where[g] == a}], workers=[a])
            futures[a] = self.client.submit(ShardSet, context, mine, nthreads[a], iteration, actor=True, workers=[a],
                                            allow_other_workers=False, pure=False)
        session.actors = {a: session.wait(a, lambda f=f: f) for a, f in futures.items()}
        return session


class _ShardSession:
    """One search's actors (the session interface of :class:`dtl_dist.select.rslocal.LocalShards`).

    Balance. Drops and merges (which must not depend on the layout) leave the workers unequal shares of the
    pool; after each drop and merge, while the most loaded worker holds more than 10 % above the least loaded
    one, its largest group smaller than half the difference moves there whole (a group draws the same
    subsets wherever it lives)."""

    def __init__(self, engine: ShardEngine, where: dict, sizes: dict):
        self.engine, self.where, self.sizes, self.actors = engine, where, sizes, {}

    def _rebalance(self, iteration: int) -> None:
        while len(self.actors) > 1:
            load = {a: 0 for a in self.actors}
            for g, a in self.where.items():
                load[a] += self.sizes[g]
            high, low = max(load, key=load.get), min(load, key=load.get)
            gap = load[high] - load[low]
            movable = [g for g, a in self.where.items() if a == high and 0 < self.sizes[g] <= gap / 2]
            if gap <= 0.1 * max(1, sum(load.values()) / len(load)) or not movable:
                return
            g = max(movable, key=lambda g: (self.sizes[g], -g))
            self._send(iteration, g, g, low)

    def wait(self, address: str, ask):
        """The result of the future ``ask()`` returns, or :class:`WorkerLost` as soon as ``address`` is gone
        or unreachable; a lost worker is not used again (the actors find their client through
        ``as_current``: ours is not the default)."""
        from dtl_dist.select.rslocal import WorkerLost
        from dtl_dist.select.shards import StaleShards

        try:
            with self.engine.client.as_current():
                future = ask()
                while True:
                    try:
                        return future.result(timeout=self.engine.poll)
                    except TimeoutError:
                        if address not in self.engine.alive():
                            raise WorkerLost(address, "it left the cluster") from None
        except WorkerLost:
            self.engine.lost.add(address)
            raise
        except FutureCancelledError as exc:  # the worker died with the data its call needed (no nanny: dask-mpi)
            self.engine.lost.add(address)
            raise WorkerLost(address, f"its call was cancelled ({exc})") from None
        except (StaleShards, OSError, RuntimeError) as exc:  # recreated, unreachable, "Worker holding Actor was lost"
            if type(exc) is RuntimeError and "Actor was lost" not in str(exc):
                raise  # an error of the search itself, not of the cluster
            self.engine.lost.add(address)
            raise WorkerLost(address, str(exc) or type(exc).__name__) from None

    def call(self, method: str, *args) -> dict:
        futures = {a: self.wait(a, lambda actor=actor: _Ready(getattr(actor, method)(*args)))
                   for a, actor in self.actors.items()}  # all calls are sent before any is awaited
        out = {}
        for address, future in futures.items():
            out.update(self.wait(address, lambda f=future: f))
        if method == "drop":  # the pools' new sizes; the iteration has ended
            self.sizes = dict(out)
            self._rebalance(args[0] + 1)
        return out

    def move(self, iteration: int, source: int, destination: int) -> None:
        self._send(iteration, source, destination, self.where[destination])
        self.sizes[destination] += self.sizes.pop(source)
        self._rebalance(iteration)

    def _send(self, iteration: int, g: int, into: int, address: str) -> None:
        """Export group ``g`` from its worker and absorb it into group ``into`` on ``address`` (``into = g``:
        the group moves whole)."""
        src = self.where.pop(g)
        part = self.wait(src, lambda: self.actors[src].export(iteration, g))
        self.wait(address, lambda: self.actors[address].absorb(iteration, into, part))
        self.where[into] = address

    def stop(self) -> None:
        self.actors, self.where = {}, {}


class _Ready:
    """A value in a future's clothes, for :meth:`_ShardSession.wait`."""

    def __init__(self, value):
        self.value = value

    def result(self, timeout=None):
        return self.value


def library_array(library):
    """A library's spectra as a dask array, chunked by rows as stored (read lazily from Zarr by the workers)."""
    import dask.array as da

    from dtl_dist.library.integrity import open_group

    array = da.from_zarr(open_group(library.path)[0]["spectra"])  # a missing chunk is an error, not NaN
    return array if library.index is None else array[library.index]


# --- dask-jobqueue: workers as batch jobs -------------------------------------------------------------------

JOBQUEUE_KEYS = {"scheduler": "slurm or pbs", "jobs": "worker jobs to keep running",
                 "adapt": "{minimum_jobs, maximum_jobs} instead of jobs", "start_timeout": "e.g. 30m, 1h",
                 "cluster": "keyword arguments of the dask_jobqueue cluster class"}
"""Keys of a jobqueue YAML file and what each holds."""


@dataclass(frozen=True)
class JobqueueSpec:
    """A dask-jobqueue deployment read from YAML (:func:`load_jobqueue`)."""

    path: str
    scheduler: str
    cluster: dict = field(default_factory=dict)
    jobs: int | None = None
    adapt: dict | None = None
    start_timeout: str = "10m"

    def cluster_class(self):
        try:
            import dask_jobqueue
        except ImportError:
            raise UserInputError(f"--jobqueue {self.path}: needs the dask-jobqueue package "
                                 "(pip install 'dtl-dist[mpi]')") from None
        return {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[self.scheduler]


def jobqueue_options(cluster_class) -> set[str]:
    """Keyword arguments a dask-jobqueue cluster class accepts (its own and its job class's)."""
    names = set()
    for fn in (cluster_class.__init__, cluster_class.job_cls.__init__, cluster_class.job_cls.__mro__[1].__init__):
        names |= {p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    # dashboard_address is refused by the class itself: it belongs in scheduler_options
    return names - {"self", "scheduler", "job_cls", "loop", "asynchronous", "n_workers", "dashboard_address"}


def load_jobqueue(path) -> JobqueueSpec:
    """Read and check a jobqueue YAML file; any unknown or ill-typed key is a one-line :class:`UserInputError`.

    Example (``cluster/jobqueue/slurm.yaml``)::

        scheduler: slurm
        jobs: 2
        cluster: {cores: 128, processes: 1, memory: 230GB, account: pawsey0000, queue: work,
                  walltime: "01:00:00", interface: hsn0}
    """
    import yaml
    from dask.utils import parse_timedelta

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"--jobqueue {path}: no such file")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserInputError(f"--jobqueue {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise UserInputError(f"--jobqueue {path}: expected a mapping with keys {', '.join(JOBQUEUE_KEYS)}")
    unknown = sorted(set(spec) - set(JOBQUEUE_KEYS))
    if unknown:
        raise UserInputError(f"--jobqueue {path}: unknown key {unknown[0]!r}; expected "
                             + "; ".join(f"{k} ({v})" for k, v in JOBQUEUE_KEYS.items()))
    if spec.get("scheduler") not in ("slurm", "pbs"):
        raise UserInputError(f"--jobqueue {path}: scheduler {spec.get('scheduler')!r}; expected slurm or pbs")
    jobs, adapt, cluster = spec.get("jobs"), spec.get("adapt"), spec.get("cluster") or {}
    if (jobs is None) == (adapt is None):
        raise UserInputError(f"--jobqueue {path}: give either jobs (a number of worker jobs) or adapt, not "
                             f"{'both' if jobs is not None else 'neither'}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise UserInputError(f"--jobqueue {path}: jobs {jobs!r}; expected an integer >= 1")
    if adapt is not None and (not isinstance(adapt, dict) or set(adapt) - {"minimum_jobs", "maximum_jobs"}):
        raise UserInputError(f"--jobqueue {path}: adapt {adapt!r}; expected {{minimum_jobs: N, maximum_jobs: M}}")
    if not isinstance(cluster, dict):
        raise UserInputError(f"--jobqueue {path}: cluster must be a mapping of keyword arguments")
    timeout = str(spec.get("start_timeout", "10m"))
    try:
        parse_timedelta(timeout)
    except (KeyError, ValueError):
        raise UserInputError(f"--jobqueue {path}: start_timeout {timeout!r}; expected a duration such as 30m or 1h")
    result = JobqueueSpec(str(path), spec["scheduler"], dict(cluster), jobs, adapt, timeout)
    allowed = jobqueue_options(result.cluster_class())
    unknown = sorted(set(cluster) - allowed)
    if unknown:
        raise UserInputError(f"--jobqueue {path}: unknown key {unknown[0]!r} in cluster; expected keyword arguments "
                             f"of {result.cluster_class().__name__}: {', '.join(sorted(allowed))}")
    return result


def jobqueue_cluster(spec: JobqueueSpec):
    """The dask-jobqueue cluster of ``spec`` (its scheduler runs here; no job is submitted yet). Its dashboard
    listens on this host's loopback unless the file says otherwise (reach it through an SSH tunnel)."""
    options = dict(spec.cluster)
    options["scheduler_options"] = {"dashboard_address": "127.0.0.1:8787", **options.get("scheduler_options", {})}
    try:
        return spec.cluster_class()(**options)
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"--jobqueue {spec.path}: {exc}") from None


class _OwningClient(Client):
    """A Client that also closes the cluster it was given (the jobqueue cluster started for it)."""

    def close(self, *args, **kwargs):
        try:
            return super().close(*args, **kwargs)
        finally:
            self.cluster.close()


def _jobqueue_client(spec: JobqueueSpec, security) -> Client:
    """Start the jobqueue cluster, submit its worker jobs and wait for the first worker."""
    from dask.utils import parse_timedelta

    cluster = jobqueue_cluster(spec)
    if spec.jobs is not None:
        cluster.scale(jobs=spec.jobs)
    else:
        cluster.adapt(**spec.adapt)
    c = _OwningClient(cluster, security=security, set_as_default=False)
    try:
        c.wait_for_workers(1, timeout=parse_timedelta(spec.start_timeout))
    except TimeoutError:
        c.close()
        raise UserInputError(f"--jobqueue {spec.path}: no worker job started within {spec.start_timeout} "
                             "(queue wait or a failing job: see the jobs' output)") from None
    return c
