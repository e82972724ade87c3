"""RS-LOCAL-v2.0: transfer instances from a spectral library to a site by resampling (paper section 2.3.2).

The active pool K starts as the whole library (samples with a measured target). Each iteration draws random
subsets of ``m`` library samples, each sample in about ``b`` of them, fits a PLS1 model with ``ncomp``
components on each (the compiled kernel of :mod:`dtl_dist.linear.pls_compiled`) and scores it on the site's
labelled local samples. A sample's *weakness* is the mean score of the subsets that held it in this iteration,
and the iteration drops its share of the weakest samples: ``d = min(ceil(r |K|), |K| - k)`` with
``r = 1 - retain``, ties ordered by a keyed random key, so exactly ``d`` go. The search stops when ``|K| = k``:
the selection has exactly ``k`` samples (the stopping rule of Lobsey et al. 2017: until k samples remain).

Subset size. A subset as large as the pool gives every sample the same score, so nothing can be told apart.
The subsets therefore shrink with the pool: ``m_K = min(m, max(ncomp + 2, floor(|K| / 2)))``, which keeps
``m`` while ``|K| >= 2m``, gives at least two subsets per round below that, and never fewer than ``ncomp + 2``
samples, so each subset's PLS keeps a residual degree of freedom after centring and ``ncomp`` components.

At scale. The pool's state lives with the library rows (:mod:`dtl_dist.select.shards`): the rows are dealt to
shards, the subsets are drawn within a shard (or a group of merged shards) by the process that owns it, from
keyed streams, weakness sums are formed there, and the drop is a distributed selection. The driver here sees
per iteration the subsets' scores (for the trace) and a few thousand ranked entries, never the pool; an engine
(``engine``: :class:`LocalShards` in this process, :func:`dtl_dist.engines.dask.shard_engine` on a cluster)
places the groups on processes. The selection depends on the seed and ``shard_rows`` only: the same samples
for any number of workers, processes or threads.

Faults. Every ``checkpoint_every`` seconds the driver collects the pools (a checkpoint, also handed to
``on_checkpoint``). When an engine loses a worker (:class:`WorkerLost`), the search restarts from the last
checkpoint on the workers left, and since every draw is keyed it selects the same samples; after ``retries``
losses it stops with an error naming the lost workers.

A subset whose fit fails or whose score is not finite (a singular PLS system: e.g. a rank-deficient subset
under the Mahalanobis criterion) scores as the worst subset of its group in that iteration; it is counted in
the trace (``n_failed``) and logged. An iteration in which no subset can be scored is an error.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from dtl_dist.errors import UserInputError
from dtl_dist.select.shards import (
    SHARD_ROWS,
    SearchContext,
    ShardSet,
    bracket,
    find_cut,
    min_group_size,
    plan_merges,
    preprocess_blocks,
    shard_plan,
    subset_size,
)

CRITERIA = ("rmse", "reconstruction", "mahalanobis")
"""Subset scores (lower is better): RMSE of the local predictions (needs local values); reconstruction
error of the local spectra in the subset's PLS space; Mahalanobis distance between the local and subset
score centroids (the last two need no local values, for sites with few labels)."""

LOG = logging.getLogger(__name__)

TRACE_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class WorkerLost(RuntimeError):
    """An engine lost the process holding some groups (``worker`` names it); the search restarts from its
    last checkpoint."""

    def __init__(self, worker: str, reason: str = ""):
        super().__init__(f"lost worker {worker}{': ' + reason if reason else ''}")
        self.worker = worker


def prepare_library(library: np.ndarray, preprocess) -> np.ndarray:
    """An (N, p) library array as float32 with a row-wise ``preprocess`` (e.g. SNV) applied, in row blocks."""
    X = np.asarray(library)
    return X if preprocess is None else preprocess_blocks(lambda i, j: X[i:j], len(X), preprocess, np.float32)


def owner(group: int, n_owners: int, n_shards: int) -> int:
    """The process of ``n_owners`` that holds ``group`` (contiguous ranges of shard numbers)."""
    return min(n_owners - 1, group * n_owners // max(1, n_shards))


class LocalShards:
    """The in-process engine: every group of a search in one :class:`~dtl_dist.select.shards.ShardSet` of this
    process, scored on ``threads`` threads (default: the CPUs this process may use). Each :meth:`start` makes
    a session of its own, so searches can run side by side."""

    def __init__(self, threads: int | None = None):
        self.threads = threads or len(os.sched_getaffinity(0))

    def start(self, context: SearchContext, groups: dict, iteration: int, n_shards: int) -> "_LocalSession":
        return _LocalSession(ShardSet(context, groups, self.threads, iteration))


class _LocalSession:
    """One search's groups in this process: the session interface every engine's ``start`` returns."""

    def __init__(self, shards: ShardSet):
        self.shards = shards

    def call(self, method: str, *args) -> dict:
        """``method(*args)`` on every process's groups, the ``{group: ...}`` results merged."""
        return getattr(self.shards, method)(*args)

    def move(self, iteration: int, source: int, destination: int) -> None:
        """Merge group ``source`` into ``destination`` (wherever they are held)."""
        self.shards.absorb(iteration, destination, self.shards.export(iteration, source))

    def stop(self) -> None:
        self.shards = None


@dataclass
class RSLocalState:
    """Search state after ``iteration`` iterations: enough to resume (checkpoint) or to report.

    ``groups`` maps each group to the library rows of its pool (ascending)."""

    iteration: int
    groups: dict
    trace: list = field(default_factory=list)

    @property
    def pool(self) -> np.ndarray:
        """The active pool K as library rows, ascending."""
        return np.sort(np.concatenate(list(self.groups.values()))) if self.groups else np.empty(0, np.int64)


@dataclass
class RSLocalResult:
    """Outcome of :func:`rslocal`.

    Attributes
    ----------
    selected : library rows of the ``k`` selected samples, ascending.
    trace : one dict per iteration: iteration, pool_size, groups, subset (m used), n_subsets, n_failed (subsets
        that could not be fitted), dropped, threshold (weakness of the least weak sample dropped) and the subset
        score quantiles (score_min, score_q05, ..., score_max).
    n_iterations : iterations run.
    n_skipped : library samples left out because their target is NaN.
    lost_workers : workers lost during the search (it restarted from a checkpoint each time).
    timings : seconds of the (last) run spent by the driver between the engine's calls (``driver_s``, its
        serial part) and waiting for them (``engine_s``).
    """

    selected: np.ndarray
    trace: list
    n_iterations: int
    n_skipped: int
    lost_workers: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)


def drop_share(pool_size: int, k: int, retain: float) -> int:
    """Samples an iteration drops: ``ceil((1 - retain) |K|)``, never taking the pool below ``k``."""
    share = math.ceil(round((1 - retain) * pool_size, 9))
    return max(0, min(share, pool_size - k))


def check_inputs(local_X, local_y, *, k, subset, b, retain, ncomp, criterion, n_valid, dtype="float32",
                 shard_rows=SHARD_ROWS) -> None:
    """Raise :class:`UserInputError` for parameters RS-LOCAL cannot run with (``n_valid``: library samples
    with a measured target)."""
    local_X = np.asarray(local_X)
    if criterion not in CRITERIA:
        raise UserInputError(f"criterion {criterion!r}: expected one of {', '.join(CRITERIA)}")
    if dtype not in ("float32", "float64"):
        raise UserInputError(f"dtype={dtype!r}: expected float32 or float64")
    if not 0 < retain < 1:
        raise UserInputError(f"retain={retain}: expected a fraction strictly between 0 and 1")
    if isinstance(shard_rows, bool) or not isinstance(shard_rows, (int, np.integer)) or shard_rows < 1:
        raise UserInputError(f"shard_rows={shard_rows!r}: expected a positive number of library rows per shard")
    if not 1 <= b < 4096:
        raise UserInputError(f"b={b}: expected 1 to 4095 appearances per sample per iteration")
    if not 1 <= ncomp <= subset - 2:
        raise UserInputError(f"ncomp={ncomp}: expected 1 <= ncomp <= subset size - 2 ({subset - 2})")
    if ncomp > local_X.shape[1]:
        raise UserInputError(f"ncomp={ncomp}: more components than bands ({local_X.shape[1]})")
    if not ncomp + 2 <= k <= n_valid - 1:
        raise UserInputError(f"k={k}: expected {ncomp + 2} <= k <= {n_valid - 1} (ncomp + 2 up to the library "
                             f"size - 1; the library has {n_valid} samples with a measured target)")
    if local_X.shape[0] < 3:
        raise UserInputError(f"site: {local_X.shape[0]} labelled local samples; RS-LOCAL needs at least 3")
    if criterion == "rmse":
        if local_y is None or not np.all(np.isfinite(local_y)):
            raise UserInputError("site: criterion 'rmse' needs a measured value for every labelled local sample")


def rslocal(library, library_y, local_X, local_y=None, *, k: int = 100, subset: int = 100, b: int = 40,
            retain: float = 0.95, ncomp: int = 10, criterion: str = "rmse", seed: int = 0, preprocess=None,
            dtype: str = "float32", shard_rows: int = SHARD_ROWS, engine=None, state: RSLocalState | None = None,
            on_iteration: Callable[[dict], None] | None = None,
            on_checkpoint: Callable[[RSLocalState], None] | None = None, checkpoint_every: float = 30.0,
            retries: int = 2) -> RSLocalResult:
    """Select the ``k`` library samples that best serve a site (RS-LOCAL-v2.0, paper section 2.3.2).

    Parameters
    ----------
    library : ndarray (N, p) or handle with ``n_samples`` and ``spectra(rows)``
        Library spectra. Pass a :class:`~dtl_dist.library.LibraryRef` so that each process reads and
        preprocesses only the rows it holds, instead of receiving them.
    library_y : ndarray (N,)
        Library targets; NaN rows are left out (counted in ``n_skipped``).
    local_X, local_y : ndarray (n, p), (n,)
        The site's labelled local samples (``local_y`` may be None for the criteria that need no values).
    k : number of library samples to select.
    subset : samples per random subset (m); smaller once the pool is below ``2 m`` (:func:`subset_size`).
    b : appearances of each sample per iteration.
    retain : fraction of the pool kept per iteration (1 - r).
    ncomp : PLS components of the subset models.
    criterion : one of :data:`CRITERIA`.
    seed : random seed; with ``shard_rows``, all the selection depends on (not the workers or threads).
    preprocess : row-wise transformer (e.g. ``SNV()``) applied to library and local spectra, or None.
    dtype : "float32" or "float64" for the PLS kernel.
    shard_rows : rows per shard (:func:`dtl_dist.select.shards.shard_plan`).
    engine : where the groups live: :class:`LocalShards` (default, this process's CPUs) or a cluster engine.
    state : a checkpointed :class:`RSLocalState` to resume from.
    on_iteration : called with each iteration's trace row (progress).
    on_checkpoint : called with the state at each checkpoint (every ``checkpoint_every`` seconds, and at the
        end); ``checkpoint_every=0`` checkpoints every iteration.
    retries : lost workers survived (each restarts the search from its last checkpoint).

    Returns
    -------
    RSLocalResult

    References
    ----------
    Shen et al. (2022), section 2.3.2; Lobsey et al. (2017), Eur. J. Soil Sci. 68, 840-852.
    """
    library_y = np.asarray(library_y, dtype=np.float64)
    local_X = np.asarray(local_X, dtype=np.float64)
    local_y = None if local_y is None else np.asarray(local_y, dtype=np.float64)
    valid = np.flatnonzero(np.isfinite(library_y))
    check_inputs(local_X, local_y, k=k, subset=subset, b=b, retain=retain, ncomp=ncomp, criterion=criterion,
                 n_valid=valid.size, dtype=dtype, shard_rows=shard_rows)
    handle = hasattr(library, "spectra")
    if preprocess is not None:
        local_X = preprocess.fit_transform(local_X)
        if not handle:
            library = prepare_library(library, preprocess)
    context = SearchContext(library, local_X.astype(dtype), None if local_y is None else local_y.astype(dtype),
                            ncomp, criterion, preprocess if handle else None, dtype, b, seed)
    engine = engine or LocalShards()
    shards = shard_plan(valid, shard_rows)
    n_shards = max(shards) + 1  # the processes hold contiguous ranges of these (:func:`owner`)
    saved = [state or RSLocalState(0, shards)]
    lost: list[str] = []

    def checkpoint(s: RSLocalState) -> None:
        saved[0] = s
        if on_checkpoint is not None:
            on_checkpoint(s)

    while True:
        start = saved[0]
        try:
            session = engine.start(context, {g: (rows, library_y[rows]) for g, rows in start.groups.items()},
                                   start.iteration, n_shards)
            try:
                final, timings = _search(session, start, k=k, subset=subset, ncomp=ncomp, retain=retain,
                                         min_group=min_group_size(subset, shard_rows), on_iteration=on_iteration,
                                         checkpoint=checkpoint, every=checkpoint_every)
            finally:
                session.stop()
            break
        except WorkerLost as exc:
            lost.append(exc.worker)
            if len(lost) > retries:
                raise UserInputError(f"RS-LOCAL: lost {len(lost)} workers ({', '.join(lost)}), more than the "
                                     f"{retries} retries allow; last: {exc}") from None
            LOG.warning("RS-LOCAL: %s; restarting from the checkpoint of iteration %d", exc, saved[0].iteration)
    return RSLocalResult(selected=final.pool, trace=final.trace, n_iterations=final.iteration,
                         n_skipped=int(library_y.size - valid.size), lost_workers=lost, timings=timings)


def _search(session, state: RSLocalState, *, k, subset, ncomp, retain, min_group, on_iteration, checkpoint,
            every):
    """The iterations from ``state`` on the session's groups until ``k`` samples remain; returns the end state
    and the seconds spent here outside the engine's calls (the driver's serial part) and in them."""
    sizes = {g: int(len(rows)) for g, rows in state.groups.items()}
    iteration, trace, last = state.iteration, list(state.trace), time.monotonic()
    waited = [0.0]

    def engine(method: str, *args):
        started = time.perf_counter()
        try:
            return session.move(*args) if method == "move" else session.call(method, *args)
        finally:
            waited[0] += time.perf_counter() - started

    begun = time.perf_counter()
    while sum(sizes.values()) > k:
        for source, destination in plan_merges(sizes, min_group):
            engine("move", iteration, source, destination)
            sizes[destination] += sizes.pop(source)
        pool_size = sum(sizes.values())
        m = subset_size(pool_size, subset, ncomp)
        scored = engine("score", iteration, m)
        scores = np.concatenate([scored[g][0] for g in sorted(scored)])
        failed = int(sum(scored[g][1] for g in scored))
        if failed == scores.size:
            raise UserInputError(f"RS-LOCAL iteration {iteration + 1}: no subset of {m} library samples could be "
                                 f"fitted with {ncomp} PLS components (all {scores.size} scores non-finite)")
        if failed:
            LOG.warning("RS-LOCAL iteration %d: %d of %d subsets could not be fitted (singular PLS system); they "
                        "score as the worst subset of their group", iteration + 1, failed, scores.size)
        sketches = {g: scored[g][2] for g in scored}
        d = min(drop_share(pool_size, k, retain), sum(sk[3] for sk in sketches.values()))
        cut = None
        if d:
            high, low = bracket(sketches, d)
            cut = find_cut(engine("candidates", iteration, high, low), d, high)
        sizes = engine("drop", iteration, cut)
        iteration += 1
        finite = scores[np.isfinite(scores)]
        row = {"iteration": iteration, "pool_size": pool_size, "groups": len(sizes), "subset": m,
               "n_subsets": int(scores.size), "n_failed": failed, "dropped": pool_size - sum(sizes.values()),
               "threshold": math.nan if cut is None else float(cut[0]), "score_min": float(finite.min())}
        row |= {f"score_q{int(round(q * 100)):02d}": float(v)
                for q, v in zip(TRACE_QUANTILES, np.quantile(finite, TRACE_QUANTILES))}
        row["score_max"] = float(finite.max())
        trace.append(row)
        if on_iteration is not None:
            on_iteration(row)
        if sum(sizes.values()) > k and time.monotonic() - last >= every:
            checkpoint(RSLocalState(iteration, engine("pools"), list(trace)))
            last = time.monotonic()
    final = RSLocalState(iteration, engine("pools"), trace)
    checkpoint(final)
    return final, {"driver_s": time.perf_counter() - begun - waited[0], "engine_s": waited[0]}
