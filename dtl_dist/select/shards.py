"""RS-LOCAL's state kept with the library rows: shards, keyed draws, weakness sums and a distributed drop
(paper section 2.3.2; the driver is :func:`dtl_dist.select.rslocal.rslocal`).

Shards. The library's rows with a measured target are cut into blocks of :data:`BLOCK_ROWS` rows and the blocks
are dealt round-robin to ``ceil(N / shard_rows)`` shards, so every shard samples the whole library (a library
stored source by source still gives each shard a mix of its sources). The shards are a function of the library
and ``shard_rows`` only, never of the number of workers. A *group* is a shard, or shards merged when the pool
shrinks: each iteration draws its random subsets of ``m`` samples within each group, so a subset's rows are all
held by one process and no spectrum travels. A group whose pool falls below a quarter of a shard
(:func:`min_group_size`) is merged into the next smallest one (:func:`plan_merges`), so subsets are always
drawn from thousands of samples, and the last iterations run on one group holding the whole pool, as the
paper's RS-LOCAL does.

Draws. Round ``r`` of group ``g`` in iteration ``i`` permutes the group's pool with a Philox stream keyed by
``(seed, i, g, r)`` (counter-based: drawn once, by the process that scores it, in any order) and cuts it into
subsets of ``m`` (a remainder of at least ``m / 2`` is filled up from the start of the same permutation, a
smaller one sits the round out), so each sample appears about ``b`` times per iteration.

Weakness. A sample's weakness is the mean score of the subsets that held it in this iteration, summed by the
group's owner round by round in round order: the same float operations in the same order in any layout. A
subset whose fit fails scores as the worst finite subset of its group in this iteration (+inf when none is).

The drop. The iteration drops the ``d`` samples of highest weakness across all groups; ties are broken by a
key that is a keyed bijection of the library row (:func:`tie_keys`), so (weakness, key) orders the pool
totally and exactly ``d`` samples go. The selection is distributed: each group ranks its pool and sends a
sketch of :data:`SKETCH` entries (:meth:`ShardSet.score`); the driver brackets the cut between two sketch
entries (:func:`bracket`), each group sends the entries inside the bracket (:meth:`ShardSet.candidates`,
about ``2 |K| / SKETCH`` in all), and the driver finds the exact cut (:func:`find_cut`) that every group then
applies (:meth:`ShardSet.drop`). The driver handles O(subsets + groups x SKETCH) values per iteration, never
the pool.
"""

from __future__ import annotations

import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

BLOCK_ROWS = 1_024
"""Consecutive library rows that stay together in a shard."""

SHARD_ROWS = 16_384
"""Default rows per shard: a 1M library has 62 shards, a 10M one 611 (enough for a few hundred workers)."""

SKETCH = 512
"""Ranked entries per group sent to the driver for the bracket of the cut."""

PREPROCESS_ROWS = 8_192
"""Library rows read and preprocessed at a time (bounds the temporaries)."""


@dataclass(frozen=True)
class SearchContext:
    """What every process of a search needs; sent to each once.

    ``library`` is the (N, p) library spectra, already preprocessed, or a handle with ``spectra(rows)`` (e.g.
    :class:`dtl_dist.library.LibraryRef`) that the owning process reads and preprocesses (``preprocess``).
    """

    library: object
    local_X: np.ndarray  # (n, p) preprocessed local spectra, kernel dtype
    local_y: np.ndarray | None  # (n,) local values (criterion "rmse")
    ncomp: int
    criterion: str
    preprocess: object | None
    dtype: str
    b: int
    seed: int


class StaleShards(RuntimeError):
    """A call reached a process whose groups are not at the driver's iteration (e.g. an actor that Dask
    recreated on a new worker after its worker died): its state is lost and the search must restart from a
    checkpoint."""


# --- shards, keys and draws -------------------------------------------------------------------------------


def shard_plan(valid: np.ndarray, shard_rows: int = SHARD_ROWS) -> dict[int, np.ndarray]:
    """Initial groups: library rows ``valid`` (ascending) in blocks of ``min(BLOCK_ROWS, shard_rows // 16)``
    rows, block ``j`` in shard ``j mod S`` with ``S = ceil(len(valid) / shard_rows)`` (so a shard holds at
    least 16 blocks spread over the library); each shard's rows ascending."""
    shard_rows = max(1, int(shard_rows))
    n_shards = max(1, -(-valid.size // shard_rows))
    shard = (np.arange(valid.size) // max(1, min(BLOCK_ROWS, shard_rows // 16))) % n_shards
    order = np.argsort(shard, kind="stable")
    parts = np.split(valid[order], np.cumsum(np.bincount(shard, minlength=n_shards))[:-1])
    return {g: rows for g, rows in enumerate(parts) if rows.size}


_MASK = np.uint64(2**64 - 1)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 (xor-shifts and odd multiplications), vectorised."""
    x = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def tie_keys(rows: np.ndarray, seed: int, iteration: int) -> np.ndarray:
    """uint64 tie-break keys of library ``rows`` for one iteration: a keyed bijection of the row, so distinct
    rows never share a key and the key does not depend on which group or process holds the row."""
    salt = _splitmix64(np.array([(int(seed) << 32) ^ int(iteration)], dtype=np.uint64))
    return _splitmix64(np.asarray(rows, dtype=np.uint64) ^ salt)


def _stream(seed: int, iteration: int, group: int, rnd: int) -> np.random.Generator:
    """The Philox stream of one round of one group in one iteration (a counter-based key, no state)."""
    if not (0 <= rnd < 2**12 and 0 <= group < 2**28 and 0 <= iteration < 2**24):
        raise ValueError(f"stream key out of range: iteration {iteration}, group {group}, round {rnd}")
    key = np.array([int(_splitmix64(np.array([seed % 2**64], dtype=np.uint64))[0]),
                    (iteration << 40) | (group << 12) | rnd], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key))


def round_subsets(pool_size: int, m: int, seed: int, iteration: int, group: int, rnd: int) -> np.ndarray:
    """Subsets of one round: ``(round(|pool| / m), m)`` positions into the group's pool, each position once
    (positions of the remainder subset, when there is one, twice)."""
    if pool_size < m:
        raise ValueError(f"pool of {pool_size} samples cannot form subsets of {m}")
    perm = _stream(seed, iteration, group, rnd).permutation(pool_size)
    full, rest = divmod(pool_size, m)
    subsets = perm[: full * m].reshape(full, m)
    if rest and 2 * rest >= m:
        subsets = np.vstack([subsets, np.concatenate([perm[full * m:], perm[: m - rest]])[None]])
    return subsets


def subset_size(pool_size: int, m: int, ncomp: int) -> int:
    """Samples per subset for a pool of ``pool_size``: ``min(m, max(ncomp + 2, pool_size // 2))`` (at least two
    subsets per round, at least ``ncomp + 2`` samples each)."""
    return min(m, max(ncomp + 2, pool_size // 2))


def min_group_size(m: int, shard_rows: int) -> int:
    """Smallest pool a group keeps before it is merged: a quarter of a shard (4,096 rows by default), at
    least ``4 m``."""
    return max(4 * m, shard_rows // 4)


def plan_merges(sizes: dict[int, int], min_group: int) -> list[tuple[int, int]]:
    """Merges ``(source, destination)`` after a drop: while more than one group is left and the smallest has
    fewer than ``min_group`` samples, it goes into the next smallest (ties: the lower group number), whose
    number the merged group keeps. Only small pools ever move."""
    sizes, merges = dict(sizes), []
    while len(sizes) > 1:
        order = sorted(sizes, key=lambda g: (sizes[g], g))
        small, into = order[0], order[1]
        if sizes[small] >= min_group:
            break
        merges.append((small, into))
        sizes[into] += sizes.pop(small)
    return merges


# --- the distributed drop ---------------------------------------------------------------------------------


def drop_order(w: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Indices in the order samples are dropped: weakness descending, then key descending."""
    return np.lexsort((keys, w))[::-1]


def count_at_or_above(neg_w: np.ndarray, keys: np.ndarray, entry) -> int:
    """Entries of a ranked list (weakness descending, given as ``-w`` ascending, then key descending) that
    rank at or above ``entry = (w, key)``."""
    w, key = entry
    lo = int(np.searchsorted(neg_w, -w, "left"))
    hi = int(np.searchsorted(neg_w, -w, "right"))
    return lo + (hi - lo) - int(np.searchsorted(keys[lo:hi][::-1], np.uint64(key), "left"))


def sketch(neg_w: np.ndarray, keys: np.ndarray) -> tuple:
    """``(w, keys, ranks, n)``: a ranked list's entries at every ``ceil(n / SKETCH)``-th rank, the first and
    the last included, and its length."""
    n = neg_w.size
    ranks = np.unique(np.append(np.arange(0, n, max(1, -(-n // SKETCH))), n - 1)) if n else np.empty(0, np.int64)
    return -neg_w[ranks], keys[ranks], ranks, n


def bracket(sketches: dict, d: int):
    """Two sketch entries ``(high, low)`` between which the ``d``-th weakest sample lies: at most ``d``
    samples rank at or above ``high`` (None: no such entry) and at least ``d`` at or above ``low``.

    ``sketches`` maps a group to its :func:`sketch`.
    """
    parts = [(np.asarray(w, float), np.asarray(k, np.uint64), np.asarray(r, np.int64), n)
             for w, k, r, n in sketches.values() if n]
    w = np.concatenate([p[0] for p in parts])
    keys = np.concatenate([p[1] for p in parts])
    # a group's count at or above one of its own sketch entries j is ranks[j] + 1 (lower bound for a later
    # entry of another group) and below ranks[j + 1] (upper bound; its size after its last entry)
    lower = np.concatenate([np.diff(r + 1, prepend=0) for _, _, r, _ in parts])
    upper = np.concatenate([np.diff(np.append(r[1:], n), prepend=0) for _, _, r, n in parts])
    order = drop_order(w, keys)
    lower, upper = np.cumsum(lower[order]), np.cumsum(upper[order])
    high = np.flatnonzero(upper <= d)
    low = int(np.flatnonzero(lower >= d)[0])
    entry = lambda i: (float(w[order[i]]), int(keys[order[i]]))  # noqa: E731
    return (entry(high[-1]) if high.size else None), entry(low)


def find_cut(candidates: dict, d: int, high):
    """The entry of the ``d``-th weakest sample from each group's ``(n_above_high, w, keys)`` candidates:
    every sample ranking at or above it is dropped, exactly ``d`` in all."""
    need = d - sum(c[0] for c in candidates.values())
    if need == 0:
        return high
    w = np.concatenate([np.asarray(c[1], float) for c in candidates.values()])
    keys = np.concatenate([np.asarray(c[2], np.uint64) for c in candidates.values()])
    order = drop_order(w, keys)
    return float(w[order[need - 1]]), int(keys[order[need - 1]])


# --- one process's groups ---------------------------------------------------------------------------------


@dataclass
class Group:
    """A group's rows (ascending library rows), where they are in its spectra ``X`` and targets ``y`` (arrays
    in the kernel dtype, shared by the groups read together), and its pool (ascending positions into
    ``rows``); after :meth:`ShardSet.score`, its pool ranked for the drop."""

    rows: np.ndarray
    X: np.ndarray
    y: np.ndarray
    at: np.ndarray  # rows[i] is X[at[i]]
    pool: np.ndarray
    ranked: tuple | None = None  # (-weakness ascending, keys, indices into pool) of the ranked samples


_prepared: dict = {}
_prepared_lock = threading.Lock()


def preprocess_blocks(read, n: int, preprocess, dtype) -> np.ndarray:
    """Rows ``0 .. n`` from ``read(start, stop)`` with the row-wise ``preprocess`` (None: as read) applied, in
    blocks of :data:`PREPROCESS_ROWS` rows written into one ``(n, p)`` array of ``dtype`` (``n >= 1``)."""
    out = None
    for i in range(0, n, PREPROCESS_ROWS):
        block = read(i, min(i + PREPROCESS_ROWS, n))
        if out is None:
            out = np.empty((n, block.shape[1]), dtype=dtype)
        out[i:i + len(block)] = block if preprocess is None else preprocess.fit_transform(block)
    return out


def read_rows(library, rows: np.ndarray, preprocess, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """``(X, at)``: spectra holding library ``rows`` (ascending), row ``rows[i]`` at ``X[at[i]]``, in ``dtype``.

    An array is taken as already preprocessed and used in place. A handle (``spectra(rows)``) is read in row
    blocks with the row-wise ``preprocess`` applied, and kept once per process: a later search of the same
    library here (the outer splits of a study, a restart after a lost worker) uses that copy when it holds
    the rows, so a process never holds two copies of one library."""
    if not hasattr(library, "spectra"):
        return np.ascontiguousarray(library, dtype=dtype), rows
    key = (library, repr(preprocess), dtype)
    with _prepared_lock:
        held = _prepared.get(key)
        if held is not None:
            pos = np.minimum(np.searchsorted(held[0], rows), held[0].size - 1)
            if np.array_equal(held[0][pos], rows):
                return held[1], pos
        while len(_prepared) >= 2:  # the libraries of two searches side by side (a study's global and country)
            _prepared.pop(next(iter(_prepared)))
        out = preprocess_blocks(lambda i, j: library.spectra(rows[i:j]), rows.size, preprocess, dtype)
        _prepared[key] = (rows, out)
        _release_freed_memory()
        return out, np.arange(rows.size)


def _release_freed_memory() -> None:
    """Hand the freed read and preprocessing buffers back to the OS (glibc may keep freed heap memory in the
    process otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class ShardSet:
    """The groups of library rows that one process owns, and the steps of an iteration on them (a Dask actor
    on a worker, or this process for the in-process search).

    Every call names the iteration it belongs to; a call for another iteration raises :class:`StaleShards`.

    Parameters
    ----------
    context : SearchContext
    groups : ``{group: (pool rows, targets)}``, library rows ascending.
    threads : threads that score this process's subsets (the kernel releases the GIL).
    iteration : the iteration the pools are at.
    """

    def __init__(self, context: SearchContext, groups: dict, threads: int, iteration: int):
        from dtl_dist.linear.pls_compiled import subset_scores, warm_up

        warm_up()  # compiled (or loaded from numba's cache) here, before the scoring threads need it
        self.context, self.threads, self.iteration = context, max(1, int(threads)), int(iteration)
        self._scores = subset_scores
        self.groups = {}
        if not groups:
            return
        rows = np.concatenate([np.asarray(r, np.int64) for r, _ in groups.values()])
        ys = np.concatenate([np.asarray(y, np.float64) for _, y in groups.values()])
        order = np.argsort(rows, kind="stable")
        X, at_sorted = read_rows(context.library, rows[order], context.preprocess, context.dtype)
        y = np.zeros(len(X), dtype=context.dtype)
        y[at_sorted] = ys[order]
        at = np.empty(rows.size, dtype=np.int64)
        at[order] = at_sorted
        start = 0
        for g, (r, _) in groups.items():
            n = len(r)
            self.groups[g] = Group(np.asarray(r, np.int64), X, y, at[start:start + n], np.arange(n))
            start += n

    def _check(self, iteration: int) -> None:
        if iteration != self.iteration:
            raise StaleShards(f"groups {sorted(self.groups)} are at iteration {self.iteration}, not {iteration}")

    def sizes(self) -> dict[int, int]:
        return {g: int(group.pool.size) for g, group in self.groups.items()}

    def pools(self) -> dict[int, np.ndarray]:
        """Each group's pool as library rows (ascending): the state a checkpoint keeps."""
        return {g: group.rows[group.pool] for g, group in self.groups.items()}

    def score(self, iteration: int, m: int) -> dict:
        """Draw and score the iteration's subsets of every group, sum each pool sample's weakness and rank the
        pool. Returns ``{group: (subset scores, n_failed, sketch)}`` (sketch: see :func:`bracket`).

        The rounds are scored on the threads in units of a few rounds (about 8 units per thread); this
        thread ranks each group as soon as its rounds are in, while the threads score the next groups."""
        self._check(iteration)
        c = self.context
        per_unit = max(1, min(c.b, len(self.groups) * c.b // (8 * self.threads)))

        def run(g: int, rounds: range) -> list:
            group = self.groups[g]
            out = []
            for r in rounds:
                positions = round_subsets(group.pool.size, m, c.seed, iteration, g, r)
                out.append((positions, self._scores(group.X, group.at[group.pool[positions]], group.y, c.local_X,
                                                    c.local_y, c.ncomp, c.criterion)))
            return out

        with ThreadPoolExecutor(self.threads, thread_name_prefix="dtl-rslocal") as pool:
            units = {g: [pool.submit(run, g, range(r, min(r + per_unit, c.b))) for r in range(0, c.b, per_unit)]
                     for g in self.groups}
            return {g: self._rank(g, iteration, [r for unit in futures for r in unit.result()])
                    for g, futures in units.items()}

    def _rank(self, g: int, iteration: int, rounds: list) -> tuple:
        group = self.groups[g]
        scores = np.concatenate([s for _, s in rounds])
        failed = ~np.isfinite(scores)
        worst = scores[~failed].max() if (~failed).any() else np.inf
        total, count = np.zeros(group.pool.size), np.zeros(group.pool.size, dtype=np.int64)
        for positions, s in rounds:  # round by round, in round order: the same sums in every layout
            flat = positions.reshape(-1)
            total += np.bincount(flat, np.repeat(np.where(np.isfinite(s), s, worst), positions.shape[1]),
                                 group.pool.size)
            count += np.bincount(flat, minlength=group.pool.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            weak = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        scored = np.flatnonzero(~np.isnan(weak))  # a sample in no subset is never dropped
        keys = tie_keys(group.rows[group.pool[scored]], self.context.seed, iteration)
        order = drop_order(weak[scored], keys)
        neg_w, keys, pos = -weak[scored][order], keys[order], scored[order]
        group.ranked = (neg_w, keys, pos)
        return scores, int(failed.sum()), sketch(neg_w, keys)

    def candidates(self, iteration: int, high, low) -> dict:
        """``{group: (n at or above high, w, keys of the entries below high and at or above low)}``."""
        self._check(iteration)
        out = {}
        for g, group in self.groups.items():
            neg_w, keys, _ = group.ranked
            a = 0 if high is None else count_at_or_above(neg_w, keys, high)
            z = count_at_or_above(neg_w, keys, low)
            out[g] = (a, -neg_w[a:z], keys[a:z])
        return out

    def drop(self, iteration: int, cut) -> dict[int, int]:
        """Drop every sample ranking at or above ``cut`` (None: none); the iteration ends. Returns the pools'
        sizes."""
        self._check(iteration)
        for group in self.groups.values():
            neg_w, keys, pos = group.ranked
            keep = np.ones(group.pool.size, dtype=bool)
            keep[pos[:0 if cut is None else count_at_or_above(neg_w, keys, cut)]] = False
            group.pool = group.pool[keep]
            group.ranked = None
        self.iteration += 1
        return self.sizes()

    def export(self, iteration: int, g: int) -> tuple:
        """Remove group ``g`` and return its pool: ``(rows, spectra, targets)``."""
        self._check(iteration)
        group = self.groups.pop(g)
        at = group.at[group.pool]
        return group.rows[group.pool], group.X[at], group.y[at]

    def absorb(self, iteration: int, g: int, part: tuple) -> None:
        """Merge an exported pool into group ``g``, or make it group ``g`` when this process holds none (a group
        moved here whole). A group is its ascending pool rows wherever it lives, so its draws are the same."""
        self._check(iteration)
        parts = [part]
        if g in self.groups:
            group = self.groups[g]
            at = group.at[group.pool]
            parts.insert(0, (group.rows[group.pool], group.X[at], group.y[at]))
        rows = np.concatenate([p[0] for p in parts])
        order = np.argsort(rows, kind="stable")
        X = np.concatenate([p[1] for p in parts])[order]
        y = np.concatenate([p[2] for p in parts])[order]
        self.groups[g] = Group(rows[order], X, y, np.arange(rows.size), np.arange(rows.size))
