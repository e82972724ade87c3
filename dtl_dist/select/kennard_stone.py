"""Kennard-Stone selection of the local_labelled samples of a site (paper section 2.1).

The paper selects n = 30 of the N local samples with the Kennard-Stone algorithm on the spectra only; the
N - n others are the local_test set. This is the classic algorithm (Kennard and Stone, 1969, as in
``prospectr::kenStone``, Stevens and Ramirez-Lopez, 2014): start from the two samples farthest apart, then
repeatedly add the sample whose distance to its nearest selected sample is largest.

Bands are not standardised (as in prospectr). The ``kennard-stone`` PyPI package differs in two ways: it
standardises every band, and it starts from the sample farthest from the mean instead of the farthest pair. Given
the same (standardised) input, both select the same samples whenever that sample belongs to the farthest pair
(true for the LimeSoDa sites and the Geeves library; then only the order of the first two differs).

Memory: a centred float64 copy of the spectra, O(N) per step, and one fixed 32 MiB block of distances while
searching the farthest pair row block by row block; no N x N matrix is ever held.
"""

from __future__ import annotations

import numpy as np

from dtl_dist.errors import UserInputError

METRICS = ("euclidean", "mahalanobis")
EXPLAINED_VARIANCE = 0.99
"""Fraction of variance kept by the default ``n_components`` of the Mahalanobis metric."""
_BLOCK_ELEMENTS = 2**22
"""Distances computed at once while searching the farthest pair (32 MiB of float64)."""


def kennard_stone(X, n: int, *, metric: str = "euclidean", n_components: int | None = None) -> np.ndarray:
    """Select ``n`` representative rows of ``X`` with the Kennard-Stone algorithm.

    Parameters
    ----------
    X : array-like of shape (N, n_bands)
        Spectra (rows), already preprocessed.
    n : int
        Number of samples to select, 2 <= n <= N.
    metric : {"euclidean", "mahalanobis"}, default="euclidean"
        "mahalanobis" is the Euclidean distance between PCA scores divided by their standard deviations.
    n_components : int, optional
        Principal components used by the Mahalanobis metric; by default the fewest that explain 99% of the
        variance. Ignored for "euclidean".

    Returns
    -------
    ndarray of int of shape (n,)
        Selected row indices in selection order: the farthest pair first (lower index first), then one
        sample per step. Ties go to the lowest row index (``np.argmax``).

    Raises
    ------
    UserInputError
        If ``n`` is not in [2, N], ``X`` holds non-finite values, or the metric parameters are invalid.

    References
    ----------
    Shen et al. (2022), section 2.1; Kennard and Stone (1969), Technometrics 11, 137-148;
    Stevens and Ramirez-Lopez (2014), prospectr ``kenStone``.

    Examples
    --------
    >>> kennard_stone([[0.0], [1.0], [10.0], [4.0]], 3)
    array([0, 2, 3])
    """
    X = _points(X, n, metric, n_components)
    sq_norms = np.einsum("ij,ij->i", X, X)
    selected = list(_farthest_pair(X, sq_norms))
    min_sq = np.minimum(_sq_distances(X, sq_norms, selected[0]), _sq_distances(X, sq_norms, selected[1]))
    min_sq[selected] = -1.0
    while len(selected) < n:
        best = int(np.argmax(min_sq))
        selected.append(best)
        np.minimum(min_sq, _sq_distances(X, sq_norms, best), out=min_sq)
        min_sq[best] = -1.0
    return np.asarray(selected, dtype=np.intp)


def split_local(X, n: int, *, metric: str = "euclidean", n_components: int | None = None):
    """Split a site's samples into local_labelled (Kennard-Stone) and local_test (the rest), paper section 2.1.

    Parameters
    ----------
    X, n, metric, n_components
        As in :func:`kennard_stone`.

    Returns
    -------
    local_labelled : ndarray of int of shape (n,)
        Selected row indices in selection order.
    local_test : ndarray of int of shape (N - n,)
        The other row indices, ascending.
    """
    local_labelled = kennard_stone(X, n, metric=metric, n_components=n_components)
    local_test = np.setdiff1d(np.arange(len(X)), local_labelled)
    return local_labelled, local_test


def _points(X, n, metric, n_components) -> np.ndarray:
    """Validated, centred float64 coordinates in which Euclidean distance is the requested metric."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise UserInputError(f"Kennard-Stone: expected a 2-D array of spectra (samples x bands), got shape {X.shape}")
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise UserInputError(
            f"Kennard-Stone: spectra row {row}, column {col} is {X[row, col]}: expected a finite value"
        )
    if not (isinstance(n, (int, np.integer)) and 2 <= n <= len(X)):
        raise UserInputError(f"Kennard-Stone n={n!r}: expected an integer from 2 to the number of samples ({len(X)})")
    if metric not in METRICS:
        raise UserInputError(f"Kennard-Stone metric={metric!r}: expected one of {METRICS}")
    X = X - X.mean(axis=0)
    if metric == "euclidean":
        return X
    return _whitened_scores(X, n_components)


def _whitened_scores(X, n_components) -> np.ndarray:
    """PCA scores of centred ``X`` divided by their standard deviations (Mahalanobis distance in PC space)."""
    u, s, _ = np.linalg.svd(X, full_matrices=False)
    variance = s**2
    rank = int(np.sum(s > s[0] * max(X.shape) * np.finfo(np.float64).eps)) if s[0] > 0 else 0
    if n_components is None:
        explained = np.cumsum(variance) / variance.sum() if rank else np.zeros(0)
        n_components = int(np.searchsorted(explained, EXPLAINED_VARIANCE - 1e-12) + 1)
    if not (isinstance(n_components, (int, np.integer)) and 1 <= n_components <= rank):
        raise UserInputError(
            f"Kennard-Stone n_components={n_components!r}: expected an integer from 1 to the number of "
            f"principal components with non-zero variance ({rank})"
        )
    # scores = u * s; their standard deviation is s / sqrt(N - 1), so whitened scores are u * sqrt(N - 1).
    return u[:, :n_components] * np.sqrt(len(X) - 1)


def _sq_distances(X, sq_norms, i) -> np.ndarray:
    """Squared Euclidean distances from row ``i`` to every row, O(N) memory."""
    return np.maximum(sq_norms + sq_norms[i] - 2.0 * (X @ X[i]), 0.0)


def _farthest_pair(X, sq_norms) -> tuple[int, int]:
    """Indices (i < j) of the two rows farthest apart; ties go to the lowest (i, j). Blocks of rows, O(N) memory."""
    N = len(X)
    rows = max(1, _BLOCK_ELEMENTS // N)
    best, pair = -np.inf, (0, 1)
    for start in range(0, N - 1, rows):
        stop = min(start + rows, N - 1)
        # squared distances of rows start..stop-1 to rows start..N-1 (upper triangle; diagonal and below masked)
        d = X[start:stop] @ X[start:].T
        d *= -2.0
        d += sq_norms[start:stop, None]
        d += sq_norms[None, start:]
        d[:, : stop - start][np.tri(stop - start, dtype=bool)] = -np.inf
        k = int(np.argmax(d))
        if d.flat[k] > best:
            best = d.flat[k]
            i, j = divmod(k, d.shape[1])
            pair = (start + i, start + j)
    return pair
