"""RS-LOCAL-v2.0: transfer instances from a spectral library to a site by resampling (paper section 2.3.2).

The active pool K starts as the whole library (samples with a measured target). Each iteration draws
``B ~ |K| b / m`` random subsets of ``m`` library samples, fits a PLS1 model with ``ncomp`` components on
each (the batched kernel of :mod:`dtl_dist.linear.pls_kernel`) and scores the subset on the site's labelled
local samples. A sample's *weakness* is the mean score of the subsets that contained it in this iteration,
and the iteration drops its share of the weakest samples: ``d = min(ceil(r |K|), |K| - k)`` with
``r = 1 - retain``. Samples tied at the threshold are ordered by a random key drawn from the iteration's
stream, so ties never drop more than ``d``. The search stops when ``|K| <= k (1 + r)``; since no iteration
goes below ``k``, the selection has between ``k`` and ``ceil(k (1 + r))`` samples for any ``k`` in
``[ncomp + 2, |library| - 1]``.

Subset size. A subset as large as the pool gives every sample the same score, so nothing can be told apart.
The subsets therefore shrink with the pool: ``m_K = min(m, max(ncomp + 2, floor(|K| / 2)))``, which keeps
``m`` while ``|K| >= 2m`` (every large-library iteration is unchanged), gives at least two subsets per round
below that, and never fewer than ``ncomp + 2`` samples, so each subset's PLS keeps a residual degree of
freedom after centring and ``ncomp`` components.

A subset whose fit fails or whose score is not finite (a singular PLS system: e.g. a rank-deficient subset
under the Mahalanobis criterion) scores +inf; it is counted in the trace (``n_failed``), logged, and ranks as
the iteration's worst subset. An iteration in which no subset can be scored is an error.

Subset scoring is scattered as blocks through a ``map_blocks(fn, blocks, shared=()) -> list`` function
(default: this process's threads, :func:`dtl_dist.mapping.thread_map`) that calls ``fn(block, *shared)``;
:mod:`dtl_dist.engines` supplies distributed ones, which send each ``shared`` object to a worker once. A block
is only a range of subset numbers: the task re-draws the iteration's subsets from the random stream keyed by
``(seed, iteration)`` (the driver draws the same), so per-iteration traffic is the pool (|K| int32) and the
subset scores, and the selection does not depend on the number of workers or threads or on the block size.

Memory. A process keeps one preprocessed copy of the library (read from the store in row blocks, never a raw
copy beside it) and one draw per iteration, shared by all its threads: a node running one worker process with
a thread per core holds the library once, whatever its number of cores (see ``cluster/README.md``).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from dtl_dist.errors import UserInputError
from dtl_dist.mapping import thread_map
from dtl_dist.linear.pls_kernel import pls1_fit, pls1_predict, pls1_transform

CRITERIA = ("rmse", "reconstruction", "mahalanobis")
"""Subset scores (lower is better): RMSE of the local predictions (needs local values); reconstruction
error of the local spectra in the subset's PLS space; Mahalanobis distance between the local and subset
score centroids (the last two need no local values, for sites with few labels)."""

LOG = logging.getLogger(__name__)

TRACE_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class SearchContext:
    """What every task of a search needs; the same object for the whole search, so an engine sends it to
    each worker once.

    ``library`` is the (N, p) library spectra or a handle with ``n_samples`` and ``spectra(rows)`` (e.g.
    :class:`dtl_dist.library.LibraryRef`) that a worker process reads and preprocesses once.
    """

    library: object  # prepared (N, p) array, or a handle prepared on the worker
    library_y: np.ndarray  # (N,) library targets, in the kernel's dtype
    local_X: np.ndarray  # (n, p) preprocessed local spectra
    local_y: np.ndarray | None  # (n,) local values (criterion "rmse")
    ncomp: int
    criterion: str
    preprocess: object | None  # row-wise transformer applied to library spectra (e.g. SNV)
    dtype: str
    b: int
    seed: int


@dataclass(frozen=True)
class IterationPool:
    """What changes per iteration: its number (keys the random stream), the active pool (library rows) and
    the subset size for this pool (:func:`subset_size`)."""

    iteration: int
    pool: np.ndarray  # (|K|,) int32
    subset: int


@dataclass(frozen=True)
class SubsetBlock:
    """One task: subsets ``start:stop`` of the iteration's draw (:func:`iteration_subsets`), which the task
    re-draws from the keyed stream itself, so only the pool and the scores travel."""

    start: int
    stop: int


CHUNK = 128
"""Subsets per kernel call. Blocks are cut at multiples of it and every engine runs a task with one torch
thread, so a subset's score is bitwise the same for any block size, worker, process or thread count (on one
kind of CPU; workers on different instruction sets may round differently)."""


PREPROCESS_ROWS = 65_536
"""Library rows preprocessed at a time (bounds the temporaries)."""

_prepared: dict = {}
_prepared_lock = threading.Lock()
_draws: dict = {}
_draws_lock = threading.Lock()


def prepare_library(library, preprocess) -> np.ndarray:
    """Library spectra as float32 with a row-wise ``preprocess`` (e.g. SNV) applied, in row blocks.

    ``library`` is an (N, p) array, or a handle with ``n_samples`` and ``spectra(rows)`` that is read block
    by block into the result, so no raw copy of the whole library is ever held beside it.
    """
    if hasattr(library, "spectra"):
        n, read = library.n_samples, library.spectra
    elif preprocess is None:
        return library
    else:
        X = np.asarray(library)
        n, read = len(X), X.__getitem__
    out = np.empty((n, read(slice(0, 1)).shape[1]), dtype=np.float32)
    for i in range(0, n, PREPROCESS_ROWS):
        block = read(slice(i, i + PREPROCESS_ROWS))
        out[i:i + len(block)] = block if preprocess is None else preprocess.fit_transform(block)
    return out


def _library_array(library, preprocess) -> np.ndarray:
    """Spectra of a block's library: an array is used as given (the driver prepared it); a handle is read
    and preprocessed once per process, by the first of its threads that needs it, and kept for the
    following iterations (one copy per process, shared by its threads)."""
    if not hasattr(library, "spectra"):
        return library
    key = (library, repr(preprocess))
    with _prepared_lock:
        if key not in _prepared:
            _prepared.clear()
            _prepared[key] = prepare_library(library, preprocess)
        return _prepared[key]


def score_block(block: SubsetBlock, context: SearchContext, draw: IterationPool) -> np.ndarray:
    """The task of one block: re-draw the iteration's subsets, take the block's slice and score it."""
    X = _library_array(context.library, context.preprocess)
    positions = iteration_subsets(draw.pool.size, draw.subset, context.b, context.seed, draw.iteration)
    rows = draw.pool[positions[block.start:block.stop]]
    return score_subsets(X, rows, context.library_y[rows], context)


def score_subsets(X: np.ndarray, rows: np.ndarray, subset_y: np.ndarray, context: SearchContext) -> np.ndarray:
    """Fit PLS1 on each subset (``rows`` of ``X``, targets ``subset_y``, both (n_subsets, m)) and score it on
    the local samples of ``context`` (lower is better).

    The subsets are computed in chunks of :data:`CHUNK`, one after the other, with the calling thread's torch
    threads (one in every engine's tasks: see :data:`CHUNK`).

    Returns
    -------
    ndarray of shape (n_subsets,), float64; a subset whose fit fails (non-finite score) gets +inf.
    """
    scores = [_score_chunk(X, rows[i:i + CHUNK], subset_y[i:i + CHUNK], context) for i in range(0, len(rows), CHUNK)]
    return np.concatenate(scores) if scores else np.empty(0)


def _score_chunk(X: np.ndarray, rows: np.ndarray, subset_y: np.ndarray, context: SearchContext) -> np.ndarray:
    n_sub, m = rows.shape
    dtype = getattr(torch, context.dtype)
    Xs = torch.as_tensor(np.take(X, rows.reshape(-1), axis=0), dtype=dtype).reshape(n_sub, m, -1)
    fit = pls1_fit(Xs, torch.as_tensor(subset_y, dtype=dtype), context.ncomp, dtype=dtype)
    local = torch.as_tensor(context.local_X, dtype=dtype)
    if context.criterion == "rmse":
        err = pls1_predict(fit, local) - torch.as_tensor(context.local_y, dtype=dtype)
        score = err.square().mean(dim=1).sqrt()
    elif context.criterion == "reconstruction":
        T = pls1_transform(fit, local)
        residual = (local[None] - fit.x_mean[:, None, :]) - T @ fit.x_loadings.mT
        score = residual.square().mean(dim=(1, 2)).sqrt()
    else:
        T_local = pls1_transform(fit, local).double()
        T_subset = pls1_transform(fit, Xs).double()
        diff = T_local.mean(dim=1) - T_subset.mean(dim=1)
        centred = T_subset - T_subset.mean(dim=1, keepdim=True)
        cov = centred.mT @ centred / (m - 1)
        solved, info = torch.linalg.solve_ex(cov, diff)  # info != 0: singular score covariance
        score = torch.where(info == 0, (diff * solved).sum(dim=1).clamp_min(0).sqrt(), torch.inf)
    score = score.double().numpy()
    return np.where(np.isfinite(score), score, np.inf)


def iteration_subsets(pool_size: int, m: int, b: int, seed: int, iteration: int) -> np.ndarray:
    """:func:`draw_subsets` as int32, kept for the iteration's other blocks in this process (the driver and
    every worker process draw it once per iteration, whatever their number of threads; about 40 permutations
    of the pool)."""
    key = (pool_size, m, b, seed, iteration)
    with _draws_lock:
        if key not in _draws:
            _draws.clear()
            _draws[key] = draw_subsets(pool_size, m, b, seed, iteration, dtype=np.int32)
        return _draws[key]


def draw_subsets(pool_size: int, m: int, b: int, seed: int, iteration: int, dtype=np.int64) -> np.ndarray:
    """Random subsets of one iteration, as positions into the pool.

    ``b`` rounds; each round permutes the pool and cuts it into ``round(|K| / m)`` subsets of ``m``
    distinct samples (a remainder of at least ``m / 2`` is filled up from the start of the same
    permutation, a smaller one sits the round out). So ``B = b round(|K| / m)`` and each sample appears
    about ``b`` times. The stream is keyed by ``(seed, iteration)`` only.

    Returns
    -------
    ndarray of shape (B, m), ``dtype`` (filled round by round: no int64 copy of the whole draw for int32)
    """
    if pool_size < m:
        raise ValueError(f"pool of {pool_size} samples cannot form subsets of {m}")
    rng = np.random.Generator(np.random.Philox(np.random.SeedSequence(seed, spawn_key=(iteration,))))
    full, rest = divmod(pool_size, m)
    per_round = full + (1 if rest and 2 * rest >= m else 0)
    out = np.empty((b * per_round, m), dtype=dtype)
    for r in range(b):
        perm = rng.permutation(pool_size)
        block = out[r * per_round:(r + 1) * per_round]
        block[:full] = perm[: full * m].reshape(full, m)
        if per_round > full:
            block[full] = np.concatenate([perm[full * m:], perm[: m - rest]])
    return out


def weakness(subsets: np.ndarray, scores: np.ndarray, pool_size: int) -> np.ndarray:
    """Mean score of the subsets that contain each pool sample (NaN for a sample in no subset)."""
    flat = subsets.reshape(-1)
    total = np.bincount(flat, weights=np.repeat(scores, subsets.shape[1]), minlength=pool_size)
    count = np.bincount(flat, minlength=pool_size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def subset_size(pool_size: int, m: int, ncomp: int) -> int:
    """Samples per subset for a pool of ``pool_size``: ``min(m, max(ncomp + 2, pool_size // 2))`` (see the
    module notes: at least two subsets per round, at least ``ncomp + 2`` samples each)."""
    return min(m, max(ncomp + 2, pool_size // 2))


def drop_share(pool_size: int, k: int, retain: float) -> int:
    """Samples an iteration drops: ``ceil((1 - retain) |K|)``, never taking the pool below ``k``."""
    share = math.ceil(round((1 - retain) * pool_size, 9))
    return max(0, min(share, pool_size - k))


def drop_weakest(weak: np.ndarray, n_drop: int, key: np.ndarray) -> np.ndarray:
    """Boolean mask of the ``n_drop`` samples with the highest weakness; among equal weaknesses the higher
    ``key`` goes first, so ties at the threshold never drop more than ``n_drop``. A sample in no subset (NaN
    weakness) is never dropped."""
    scored = np.flatnonzero(np.isfinite(weak))
    order = scored[np.lexsort((-key[scored], -weak[scored]))]
    drop = np.zeros(weak.size, dtype=bool)
    drop[order[:n_drop]] = True
    return drop


def tie_keys(pool_size: int, seed: int, iteration: int) -> np.ndarray:
    """Random order of the pool used to break weakness ties, from the iteration's own keyed stream."""
    rng = np.random.Generator(np.random.Philox(np.random.SeedSequence(seed, spawn_key=(iteration, 1))))
    return rng.random(pool_size)


@dataclass
class RSLocalState:
    """Search state after ``iteration`` iterations: enough to resume (checkpoint) or to report."""

    iteration: int
    pool: np.ndarray  # library rows in the active pool K
    trace: list = field(default_factory=list)


@dataclass
class RSLocalResult:
    """Outcome of :func:`rslocal`.

    Attributes
    ----------
    selected : library rows of the selected samples (between ``k`` and ``ceil(k (1 + r))`` of them).
    trace : one dict per iteration: iteration, pool_size, subset (m used), n_subsets, n_failed (subsets
        scored +inf), dropped, threshold and the subset score quantiles (score_min, score_q05, ..., score_max).
    n_iterations : iterations run.
    n_skipped : library samples left out because their target is NaN.
    """

    selected: np.ndarray
    trace: list
    n_iterations: int
    n_skipped: int


def check_inputs(local_X, local_y, *, k, subset, b, retain, ncomp, criterion, n_valid, dtype="float32") -> None:
    """Raise :class:`UserInputError` for parameters RS-LOCAL cannot run with (``n_valid``: library samples
    with a measured target)."""
    local_X = np.asarray(local_X)
    if criterion not in CRITERIA:
        raise UserInputError(f"criterion {criterion!r}: expected one of {', '.join(CRITERIA)}")
    if dtype not in ("float32", "float64"):
        raise UserInputError(f"dtype={dtype!r}: expected float32 or float64")
    if not 0 < retain < 1:
        raise UserInputError(f"retain={retain}: expected a fraction strictly between 0 and 1")
    if b < 1:
        raise UserInputError(f"b={b}: expected at least 1 appearance per sample per iteration")
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
            retain: float = 0.95, ncomp: int = 10, criterion: str = "rmse", seed: int = 0,
            preprocess=None, dtype: str = "float32", block_size: int = 256,
            map_blocks: Callable | None = None, state: RSLocalState | None = None,
            on_iteration: Callable[[RSLocalState], None] | None = None) -> RSLocalResult:
    """Select the ``k`` library samples that best serve a site (RS-LOCAL-v2.0, paper section 2.3.2).

    Parameters
    ----------
    library : ndarray (N, p) or handle with ``n_samples`` and ``spectra(rows)``
        Library spectra. Pass a :class:`~dtl_dist.library.LibraryRef` so that each process (every worker of
        a distributed ``map_blocks``, or this one) reads and preprocesses the store once, in row blocks,
        instead of receiving the spectra with every task.
    library_y : ndarray (N,)
        Library targets; NaN rows are left out (counted in ``n_skipped``).
    local_X, local_y : ndarray (n, p), (n,)
        The site's labelled local samples (``local_y`` may be None for the criteria that need no values).
    k : number of library samples to select: the selection has between ``k`` and ``ceil(k (1 + r))``.
    subset : samples per random subset (m); smaller once the pool is below ``2 m`` (:func:`subset_size`).
    b : appearances of each sample per iteration.
    retain : fraction of the pool kept per iteration (1 - r).
    ncomp : PLS components of the subset models.
    criterion : one of :data:`CRITERIA`.
    seed : random seed; the selection depends on it only (not on workers or ``block_size``).
    preprocess : row-wise transformer (e.g. ``SNV()``) applied to library and local spectra, or None;
        a handle's spectra are preprocessed once per process.
    dtype : "float32" or "float64" for the PLS kernel.
    block_size : subsets per task (rounded up to a multiple of :data:`CHUNK`).
    map_blocks : ``map_blocks(fn, blocks, shared=()) -> list`` calling ``fn(block, *shared)``; default
        this process on ``torch.get_num_threads()`` threads (:func:`dtl_dist.mapping.thread_map`).
    state : a checkpointed :class:`RSLocalState` to resume from.
    on_iteration : called with the state after every iteration (checkpointing, progress).

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
                 n_valid=valid.size, dtype=dtype)
    if preprocess is not None:
        local_X = preprocess.fit_transform(local_X)
        if not hasattr(library, "spectra"):
            library = prepare_library(np.asarray(library), preprocess)
    run = map_blocks or thread_map(torch.get_num_threads())
    context = SearchContext(library, library_y.astype(dtype), local_X, local_y, ncomp, criterion, preprocess, dtype,
                            b, seed)
    state = state or RSLocalState(iteration=0, pool=valid)
    target = k * (1 + (1 - retain))
    step = max(1, -(-block_size // CHUNK)) * CHUNK

    while state.pool.size > target:
        pool = state.pool
        m = subset_size(pool.size, subset, ncomp)
        positions = iteration_subsets(pool.size, m, b, seed, state.iteration)
        blocks = [SubsetBlock(i, min(i + step, len(positions))) for i in range(0, len(positions), step)]
        draw = IterationPool(state.iteration, pool.astype(np.int32), m)
        scores = np.concatenate(run(score_block, blocks, shared=(context, draw)))
        failed = ~np.isfinite(scores)
        if failed.all():
            raise UserInputError(f"RS-LOCAL iteration {state.iteration + 1}: no subset of {m} library samples could "
                                 f"be fitted with {ncomp} PLS components (all {len(scores)} scores non-finite)")
        if failed.any():
            LOG.warning("RS-LOCAL iteration %d: %d of %d subsets could not be fitted (singular PLS system); they "
                        "score as the worst subset", state.iteration + 1, failed.sum(), len(scores))
        scores = np.where(failed, scores[~failed].max(), scores)
        weak = weakness(positions, scores, pool.size)
        drop = drop_weakest(weak, drop_share(pool.size, k, retain), tie_keys(pool.size, seed, state.iteration))
        row = {"iteration": state.iteration + 1, "pool_size": int(pool.size), "subset": m,
               "n_subsets": int(len(positions)), "n_failed": int(failed.sum()), "dropped": int(drop.sum()),
               "threshold": float(weak[drop].min()) if drop.any() else math.nan, "score_min": float(scores.min())}
        row |= {f"score_q{int(round(q * 100)):02d}": float(v) for q, v in zip(TRACE_QUANTILES,
                                                                          np.quantile(scores, TRACE_QUANTILES))}
        row["score_max"] = float(scores.max())
        state = RSLocalState(iteration=state.iteration + 1, pool=pool[~drop], trace=[*state.trace, row])
        if on_iteration is not None:
            on_iteration(state)
    with _draws_lock:
        _draws.clear()
    return RSLocalResult(selected=state.pool, trace=state.trace, n_iterations=state.iteration,
                         n_skipped=int(library_y.size - valid.size))
