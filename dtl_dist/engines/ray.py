"""Ray engine: a local Ray runtime or a running Ray cluster, a Ray ``map_blocks`` and the Ray Tune runner.

This is the only module that imports Ray. The algorithms in ``dtl_dist.nn`` take what they need from here
as arguments: :func:`map_blocks` (fold transfers, paper 2.3.3/2.3.4) and :class:`TuneRunner` (the CNN
hyper-parameter search, paper 2.3.1), so they stay testable in-process.

Defaults follow ENVIRONMENT.md: a local runtime listens on loopback only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
unless the environment says otherwise), no dashboard, no usage stats, no driver log spam. A cluster is joined at
the address a job script started (cluster/README.md: dashboards through an SSH tunnel).
"""

from __future__ import annotations

import logging
import math
import os
import socket
from pathlib import Path

from dtl_dist.errors import UserInputError
from dtl_dist.mapping import BlocksLost, with_torch_threads

QUIET_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_memory_monitor_refresh_ms": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
}
"""Environment for a quiet Ray (set with ``setdefault`` before Ray starts)."""

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Added (``setdefault``) before a local runtime starts: Ray then binds 127.0.0.1 only. Not for joining a
cluster, whose nodes (and this driver) use their network addresses."""

LOCAL_OBJECT_STORE_BYTES = 256 * 2**20


def _quiet_env(local: bool = False) -> None:
    for key, value in (QUIET_ENV | LOOPBACK_ENV if local else QUIET_ENV).items():
        os.environ.setdefault(key, value)
    # Tune's TensorBoard logger warns on every rejected or diverged trial, whose RMSE is reported as inf.
    logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``host:port`` or ``ray://host:port``; None for ``auto`` / ``local``."""
    text = address.removeprefix("ray://")
    if text in ("auto", "local"):
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserInputError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT or 'auto'")
    return host, int(port)


def _check_reachable(address: str, timeout_s: float) -> None:
    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout_s):
            pass
    except OSError as exc:
        raise UserInputError(
            f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); "
            "start one with `ray start --head` or check the address"
        ) from None


def local_gpu_count() -> int:
    """CUDA devices visible to this process (0 without a CUDA build of torch)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def init(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None, *,
         timeout_s: float = 5.0, object_store_memory: int | None = LOCAL_OBJECT_STORE_BYTES):
    """Start a quiet local Ray runtime, or join the Ray cluster at ``address``.

    An already initialised runtime is reused as it is (so a session-wide fixture or a caller's own
    ``ray.init`` wins).

    Parameters
    ----------
    address : None (start a local runtime), ``"auto"``, ``HOST:PORT`` or ``ray://HOST:PORT``.
    num_cpus, num_gpus : resources of a local runtime (None: detect); ignored when joining a cluster.
    timeout_s : how long to wait for ``address`` to answer before giving up.
    object_store_memory : bytes for a local runtime's object store.

    Returns
    -------
    The ``ray`` module, initialised.

    Raises
    ------
    UserInputError
        When ``address`` does not answer or is malformed, or ``num_gpus`` exceeds the local CUDA devices.
    """
    _quiet_env(local=address is None)
    import ray

    if address is not None:
        _check_reachable(address, timeout_s)
    if ray.is_initialized():
        return ray
    if address is not None:
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except ConnectionError as exc:
            raise UserInputError(f"--address {address}: could not join a Ray cluster ({exc})") from None
        return ray
    if num_gpus and num_gpus > local_gpu_count():
        raise UserInputError(f"num_gpus={num_gpus}: this machine has {local_gpu_count()} CUDA device(s)")
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=object_store_memory, configure_logging=False)
    return ray


def wait_for_nodes(address: str, n_nodes: int, timeout_s: float) -> dict:
    """Wait until the Ray cluster at ``address`` accepts a driver and has ``n_nodes`` live nodes (a job script's
    start-up check); returns its resources. Raises :class:`UserInputError` naming what did not appear in time:
    the head (with the last error), or the nodes (with how many came)."""
    import time

    _quiet_env()
    # A head whose GCS answers but whose raylet died keeps ray.init looking for a node for this long (Ray's
    # default: 60 s); keep each attempt within the wait (read when ray is first imported, as in `dtl wait`).
    os.environ.setdefault("RAY_gcs_server_request_timeout_seconds", str(min(60, max(5, math.ceil(timeout_s)))))
    import ray

    deadline, last = time.monotonic() + timeout_s, "nothing listens there"
    while True:
        try:
            _check_reachable(address, 2.0)
            ray.init(address=address, log_to_driver=False, configure_logging=False)
            break
        except (UserInputError, ConnectionError, RuntimeError) as exc:
            last = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            ray.shutdown()
        if time.monotonic() > deadline:
            raise UserInputError(f"--ray-address {address}: no Ray head answered within {timeout_s:g} s ({last}); "
                                 "see the head's log")
        time.sleep(1.0)
    try:
        while (alive := sum(node["Alive"] for node in ray.nodes())) < n_nodes:
            if time.monotonic() > deadline:
                raise UserInputError(f"{alive} of {n_nodes} Ray nodes joined {address} within {timeout_s:g} s; see "
                                     "the workers' log")
            time.sleep(1.0)
        return dict(ray.cluster_resources())
    finally:
        ray.shutdown()


def running() -> bool:
    """Whether this process already has a Ray runtime (started here or joined)."""
    import ray

    return ray.is_initialized()


def shutdown() -> None:
    """Stop the Ray runtime this process started (or leave a cluster)."""
    import ray

    ray.shutdown()


def check_request(cpus: float, gpus: float) -> None:
    """Raise :class:`UserInputError` unless ``cpus`` > 0 and ``gpus`` >= 0 (checked before Ray starts)."""
    if not cpus > 0:
        raise UserInputError(f"--cpus-per-trial {cpus}: expected a number > 0")
    if not gpus >= 0:
        raise UserInputError(f"--gpus-per-trial {gpus}: expected a number >= 0")


def trial_resources(cpus: float = 1, gpus: float = 0, *, allow_cpu_fallback: bool = False,
                    warn=None) -> tuple[float, float]:
    """CPUs and GPUs each trial or task may use, checked against the nodes of the running Ray cluster.

    A task runs on one node, so a request is met when one node has that many CPUs and GPUs (logical ones
    count: ``ray start --num-gpus 4``).

    Parameters
    ----------
    cpus : CPUs per task (> 0; fractions pack several tasks per core).
    gpus : GPUs per task (>= 0; 0.25: four tasks share one GPU).
    allow_cpu_fallback : when no node has a GPU, run the tasks on CPU (with a warning) instead of failing.
    warn : called with the warning line of a CPU fallback (default: :func:`warnings.warn`).

    Returns
    -------
    (cpus, gpus) to ask Ray for: ``gpus`` is 0 after a CPU fallback.

    Raises
    ------
    UserInputError
        When a request is not a valid number or no node can meet it (before any task is submitted).
    """
    import ray

    check_request(cpus, gpus)
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    most_cpus = max((float(r.get("CPU", 0)) for r in nodes), default=0.0)
    if not any(float(r.get("CPU", 0)) >= cpus for r in nodes):
        raise UserInputError(f"--cpus-per-trial {cpus:g}: no node of the Ray cluster has that many CPUs (the "
                             f"largest has {most_cpus:g}); ask for fewer")
    most_gpus = max((float(r.get("GPU", 0)) for r in nodes), default=0.0)
    if gpus == 0 or any(float(r.get("CPU", 0)) >= cpus and float(r.get("GPU", 0)) >= gpus for r in nodes):
        return float(cpus), float(gpus)
    if allow_cpu_fallback and most_gpus == 0:
        message = (f"warning: --gpus-per-trial {gpus:g}: the Ray cluster has no GPU; the trials run on CPU "
                   "(--cpu-fallback)")
        if warn is None:
            import warnings

            warnings.warn(message, stacklevel=2)
        else:
            warn(message)
        return float(cpus), 0.0
    total = float(ray.cluster_resources().get("GPU", 0.0))
    raise UserInputError(
        f"--gpus-per-trial {gpus:g}: the Ray cluster has {total:g} GPU(s), at most {most_gpus:g} on one node; "
        "ask for fewer, or allow CPU fallback (--cpu-fallback)"
    )


def node_slots(cpus: float, gpus: float) -> list[str]:
    """The order in which :func:`map_blocks` hands tasks of ``cpus`` CPUs and ``gpus`` GPUs to the alive Ray
    nodes: node ids taking turns, each as often as it runs such tasks at once (a node with twice the GPUs gets
    every other turn twice); nodes that cannot run one are left out (all nodes when none can)."""
    import ray

    capacity = {}
    for node in ray.nodes():
        if node.get("Alive"):
            have = node["Resources"]
            fits = [have.get("CPU", 0) / cpus] + ([have.get("GPU", 0) / gpus] if gpus else [])
            capacity[node["NodeID"]] = int(min(fits) + 1e-9)
    if not any(capacity.values()):
        return sorted(capacity)
    order = []
    for turn in range(max(capacity.values())):
        order += [node for node, slots in sorted(capacity.items()) if slots > turn]
    return order


def run_task(fn, threads: int, block, *shared) -> tuple:
    """One Ray task of :func:`map_blocks`: ``fn(block, *shared)`` with ``threads`` torch threads on the device
    Ray gave it (:func:`dtl_dist.devices.task_gpus`); returns the result and the task's record: its node, the
    GPU ids Ray assigned (``ray.get_gpu_ids()``), the torch device it chose, its process and start/end times."""
    import time

    import ray

    from dtl_dist.devices import task_device, task_gpus

    gpu_ids = [str(i) for i in ray.get_gpu_ids()]
    record = {"node": ray.get_runtime_context().get_node_id(), "gpu_ids": gpu_ids, "device": task_device(gpu_ids),
              "pid": os.getpid(), "start": time.time()}
    with task_gpus(gpu_ids):
        result = with_torch_threads(fn, threads, block, *shared)
    record["end"] = time.time()
    return result, record


def map_blocks(*, num_cpus: float = 1, num_gpus: float = 0, retries: int = 2, on_task=None):
    """A ``map_blocks(fn, blocks, shared=()) -> list`` that runs each block as a Ray task (results in block order).

    The same guarantees as :func:`dtl_dist.engines.dask.map_blocks`: each ``shared`` object goes into the
    object store once and is reused while later calls pass the same object (it must not be modified in
    between); a task that raises, or whose worker dies, is retried ``retries`` times (blocks whose worker or
    node died every time raise :class:`~dtl_dist.mapping.BlocksLost` once the others finished); torch in a task
    uses as many threads as the task has CPUs (one by default), so results do not depend on the worker layout. A task
    given GPUs trains on ``cuda`` where torch has it, else on the CPU (:mod:`dtl_dist.devices`). Consecutive
    tasks go to the nodes in turn (:func:`node_slots`; a node that dies passes its tasks on), so the trials of one
    search use every node's GPUs; on a node, Ray packs fractional GPU requests onto the GPUs (``num_gpus=0.25``:
    at most four tasks per GPU).

    Parameters
    ----------
    num_cpus, num_gpus : resources of each task (fractional GPUs let several tasks share one device; check
        them first with :func:`trial_resources`).
    retries : re-runs of a failed task.
    on_task : called in the driver with each finished task's record (:func:`run_task`) plus ``fn`` and ``block``
        (its position in ``blocks``), in block order.
    """
    import itertools

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    threads = max(1, int(num_cpus))
    sent: dict = {}  # id(obj) -> (obj, ObjectRef): holding obj keeps its id from being reused
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=retries, retry_exceptions=True)(run_task)
    turn, slots = itertools.count(), []

    def ray_map(fn, blocks, shared=()):
        refs = []
        for obj in shared:
            if id(obj) not in sent:
                sent[id(obj)] = (obj, ray.put(obj))
            refs.append(sent[id(obj)][1])
        for key in set(sent) - {id(obj) for obj in shared}:
            del sent[key]
        slots[:] = slots or node_slots(num_cpus, num_gpus)
        futures = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            slots[next(turn) % len(slots)], soft=True)).remote(fn, threads, block, *refs) for block in blocks]
        done, lost = [], {}
        for i, ref in enumerate(futures):
            try:
                done.append(ray.get(ref))
            except ray.exceptions.RayTaskError as exc:  # fn raised every time: a user error (e.g. a damaged store
                if isinstance(exc.cause, UserInputError):  # chunk) as its line, else its own error
                    raise exc.cause from None
                raise
            except ray.exceptions.RayError as exc:  # its worker or node died every time
                done.append((None, None))
                lost[i] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
        if on_task is not None:
            for number, (_, record) in enumerate(done):
                if record is not None:
                    on_task({"fn": getattr(fn, "__qualname__", str(fn)), "block": number, **record})
        if lost:
            raise BlocksLost([result for result, _ in done], lost)
        return [result for result, _ in done]

    return ray_map


def param_space(space) -> dict:
    """Ray Tune ``param_space`` of a :class:`dtl_dist.nn.space.SearchSpace`: every name drawn independently
    (inactive names are ignored by the space, so any Tune searcher can sample it)."""
    from ray import tune

    from dtl_dist.nn.space import Categorical, Float, Int

    def domain(param):
        if isinstance(param, Int):
            return tune.lograndint(param.low, param.high + 1) if param.log else tune.randint(param.low, param.high + 1)
        if isinstance(param, Float):
            return tune.loguniform(param.low, param.high) if param.log else tune.uniform(param.low, param.high)
        if isinstance(param, Categorical):
            return tune.choice(list(param.choices))
        raise UserInputError(f"search space: cannot translate {type(param).__name__} to Ray Tune")

    return {name: domain(param) for name, param in space.params.items()}


def cnn_trial(config: dict, trial=None, use_gpu=False, threads=1):
    """Ray Tune function trainable: one 1D-CNN trial (a :class:`dtl_dist.nn.search.Trial`)."""
    import tempfile

    import ray
    import torch
    from ray import tune

    from dtl_dist.devices import task_device, task_gpus

    torch.set_num_threads(max(1, threads))

    def report(metrics, write_checkpoint=None):
        if write_checkpoint is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            write_checkpoint(Path(directory))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    with task_gpus(ray.get_gpu_ids() if use_gpu else ()):
        trial(dict(config), report, task_device(), tune.get_context().get_trial_id())


class _DefineByRun:
    """Optuna define-by-run space for ``OptunaSearch`` (picklable, returns no constants)."""

    def __init__(self, space):
        self.space = space

    def __call__(self, trial) -> None:
        self.space.suggest(trial)


class Progress:
    """Tune callback: one line per finished trial with trials done and the best RMSE so far."""

    def __init__(self, total: int, echo=print):
        self.total = total
        self.echo = echo
        self.done = 0
        self.best = float("inf")

    def __call__(self, trial_status: str, rmse: float) -> None:
        self.done += 1
        if trial_status == "complete":
            self.best = min(self.best, rmse)
        best = "-" if self.best == float("inf") else f"{self.best:.4f}"
        self.echo(f"trials {self.done}/{self.total}  best RMSE {best}", flush=True)


def _progress_callback(progress: Progress):
    from ray import tune

    class ProgressCallback(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            progress(result.get("status", "stopped") if result.get("complete") else "stopped",
                     float(result.get("rmse", float("inf"))))

    return ProgressCallback()


class TuneRunner:
    """Run a 1D-CNN search on Ray Tune: Optuna TPE searcher + ASHA scheduler (paper section 2.3.1).

    Every trial reports its mean fold validation RMSE after each epoch, so ASHA stops poor trials early;
    complete trials save their fold ensemble as a checkpoint. Failed trials are retried
    (``max_failures``); an interrupted search (Ctrl-C, lost driver) resumes with ``resume=True``
    (``Tuner.restore``): finished trials are kept, unfinished ones restart, and the sampler continues
    to the requested number of trials.

    Parameters
    ----------
    storage_path : directory of the Tune experiment (trial results, checkpoints, searcher state).
    name : experiment name (a sub-directory of ``storage_path``).
    address : None (local Ray runtime) or a Ray cluster address (see :func:`init`).
    num_cpus : CPUs of a local runtime (None: all).
    cpus_per_trial : CPUs (torch threads) per trial.
    gpus_per_trial : GPUs per trial; fractions share a GPU between trials (0.25: four per GPU).
    allow_cpu_fallback : train on CPU when GPUs are requested but the cluster has none.
    max_concurrent : trials running at once (None: as many as resources allow).
    resume : continue the experiment in ``storage_path/name`` instead of starting a new one.
    max_failures : retries of a trial that raised.
    progress : print a line per finished trial (trials done / best RMSE).
    callbacks : extra ``ray.tune.Callback`` objects.
    warn : called with the warning line of a CPU fallback (default: :func:`warnings.warn`).
    """

    def __init__(self, storage_path, *, name: str = "search", address: str | None = None, num_cpus: int | None = None,
                 cpus_per_trial: float = 1, gpus_per_trial: float = 0, allow_cpu_fallback: bool = False,
                 max_concurrent: int | None = None, resume: bool = False, max_failures: int = 2,
                 progress: bool = True, callbacks=(), warn=None):
        self.storage_path = storage_path
        self.name = name
        self.address = address
        self.num_cpus = num_cpus
        self.cpus_per_trial = cpus_per_trial
        self.gpus_per_trial = gpus_per_trial
        self.allow_cpu_fallback = allow_cpu_fallback
        self.max_concurrent = max_concurrent
        self.resume = resume
        self.max_failures = max_failures
        self.progress = progress
        self.callbacks = callbacks
        self.warn = warn

    @property
    def experiment_path(self) -> Path:
        return Path(self.storage_path).resolve() / self.name

    def _check(self) -> None:
        check_request(self.cpus_per_trial, self.gpus_per_trial)
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise UserInputError(f"--max-concurrent {self.max_concurrent}: expected an integer >= 1")
        if self.max_failures < 0:
            raise UserInputError(f"max_failures={self.max_failures}: expected >= 0")
        from ray.tune import Tuner

        exists = Tuner.can_restore(str(self.experiment_path))
        if self.resume and not exists:
            raise UserInputError(f"--resume: no search to resume in {self.experiment_path}")
        if not self.resume and self.experiment_path.exists():
            raise UserInputError(f"{self.experiment_path}: a search is already there; use --resume to continue it")

    def run(self, trial, space, settings) -> list[dict]:
        """Run (or resume) the search; one record per trial (``trial_id``, ``params``, ``metrics``, ``error``,
        ``checkpoint``)."""
        self._check()
        init(self.address, self.num_cpus)
        cpus, gpus = trial_resources(self.cpus_per_trial, self.gpus_per_trial,
                                     allow_cpu_fallback=self.allow_cpu_fallback, warn=self.warn)
        from ray import tune

        trainable = tune.with_resources(
            tune.with_parameters(cnn_trial, trial=trial, use_gpu=gpus > 0, threads=int(cpus)),
            {"cpu": cpus, "gpu": gpus},
        )
        if self.resume:
            tuner = tune.Tuner.restore(str(self.experiment_path), trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            tuner = tune.Tuner(trainable, tune_config=self._tune_config(space, settings),
                               run_config=self._run_config(settings))
        return _outcomes(tuner.fit())

    def _tune_config(self, space, settings):
        import optuna
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        searcher = OptunaSearch(space=_DefineByRun(space), metric=settings.metric, mode="min",
                                sampler=optuna.samplers.TPESampler(seed=settings.seed))
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=settings.max_epochs,
                                  grace_period=settings.grace_period, reduction_factor=settings.reduction_factor)
        return tune.TuneConfig(metric=settings.metric, mode="min", search_alg=searcher, scheduler=scheduler,
                               num_samples=settings.trials, max_concurrent_trials=self.max_concurrent,
                               reuse_actors=True, trial_dirname_creator=_trial_dirname)

    def _run_config(self, settings):
        from ray import tune

        callbacks = list(self.callbacks)
        if self.progress:
            callbacks.append(_progress_callback(Progress(settings.trials)))
        return tune.RunConfig(
            name=self.name, storage_path=str(Path(self.storage_path).resolve()), verbose=0,
            failure_config=tune.FailureConfig(max_failures=self.max_failures),
            callbacks=callbacks,
        )


def _outcomes(grid) -> list[dict]:
    """One plain record per trial of a Tune ResultGrid (see :meth:`dtl_dist.nn.search.SearchResult.from_outcomes`)."""
    return [{
        "trial_id": Path(result.path).name, "params": dict(result.config or {}), "metrics": result.metrics or {},
        "error": None if result.error is None else f"{type(result.error).__name__}: {result.error}",
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
    } for result in grid]


def _trial_dirname(trial) -> str:
    """``trial_00012_3dc2daee``: the trial's number in the search (sortable) and its Tune id."""
    number = trial.experiment_tag.split("_", 1)[0]
    return f"trial_{int(number):05d}_{trial.trial_id}" if number.isdigit() else f"trial_{trial.trial_id}"
