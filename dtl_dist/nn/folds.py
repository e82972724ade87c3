"""Random k-fold assignment shared by every 1D-CNN trial (paper section 2.3.1).

"A SSL or dataset from a local site was randomly split into ten train-validation folds and a 1D-CNN was
developed on each fold"; the same folds are reused when transferring representations (section 2.3.3),
so the split is a seeded function of the number of samples only.
"""

from __future__ import annotations

import numpy as np

from dtl_dist.errors import UserInputError


def kfold_assignment(n: int, folds: int = 10, seed: int = 0) -> np.ndarray:
    """Fold id in ``0..folds-1`` of each of ``n`` samples; fold sizes differ by at most one.

    Parameters
    ----------
    n : int
        Number of samples.
    folds : int
        Number of folds (the paper uses 10).
    seed : int
        Seed of the random split; the same ``(n, folds, seed)`` always gives the same folds.

    Examples
    --------
    >>> np.bincount(kfold_assignment(25, 10, seed=1)).tolist()
    [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]
    """
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise UserInputError(f"folds={folds!r}: expected an integer >= 2")
    if n < folds:
        raise UserInputError(f"{n} samples cannot be split into {folds} folds: need at least one sample per fold")
    return np.random.default_rng(seed).permutation(np.arange(n) % folds).astype(np.int64)


def check_assignment(fold_ids, n: int) -> np.ndarray:
    """Validate a user-given fold assignment of ``n`` samples; return it as int64 ids ``0..k-1``."""
    ids = np.asarray(fold_ids)
    if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
        raise UserInputError(f"folds: expected {n} integer fold ids (one per sample), got shape {ids.shape}")
    k = int(ids.max()) + 1 if n else 0
    if ids.min() < 0 or np.any(np.bincount(ids, minlength=k) == 0) or k < 2:
        raise UserInputError(f"folds: expected ids 0..k-1 with k >= 2 and every fold non-empty, got {np.unique(ids)}")
    return ids.astype(np.int64)
