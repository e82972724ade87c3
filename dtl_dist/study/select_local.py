"""Split a local site into local_labelled (n, Kennard-Stone) and local_test (N - n), saved in the site store.

Paper section 2.1: n = 30 representative samples of each site are selected with the Kennard-Stone algorithm
using only the spectra (here SNV of the stored absorbance, as in section 2.2); the other N - n samples are the
unseen local_test set. The split is stored as ``meta/role`` and read back with ``SpectralLibrary.split()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dtl_dist.errors import UserInputError
from dtl_dist.library.store import LOCAL_LABELLED, LOCAL_TEST, ROLE, SpectralLibrary
from dtl_dist.select.kennard_stone import split_local
from dtl_dist.spectra.preprocess import paper_preprocessing

UNMEASURED = "unmeasured"
"""Role of site samples without a SOC value: neither labelled nor test."""


@dataclass(frozen=True)
class LocalSplit:
    """Result of :func:`select_local`: sizes and the local_labelled ids in selection order."""

    site: str
    n_labelled: int
    n_test: int
    n_unmeasured: int
    metric: str
    local_labelled: tuple


def select_local(site, n: int = 30, *, metric: str = "euclidean") -> LocalSplit:
    """Kennard-Stone selection of ``n`` local_labelled samples of the site store ``site``, saved as ``meta/role``.

    Parameters
    ----------
    site : path of the site store.
    n : number of local_labelled samples, 2 <= n <= N (the site's samples with SOC).
    metric : "euclidean" or "mahalanobis" (see :func:`dtl_dist.select.kennard_stone.kennard_stone`).

    Returns
    -------
    LocalSplit

    References
    ----------
    Shen et al. (2022), section 2.1; Kennard and Stone (1969).
    """
    lib = SpectralLibrary.open(site)
    measured = ~np.isnan(lib.target("soc")) if "soc" in lib.targets else np.ones(lib.n_samples, dtype=bool)
    rows = np.flatnonzero(measured)
    if not (isinstance(n, (int, np.integer)) and 2 <= n <= rows.size):
        raise UserInputError(
            f"{site}: --n {n}: expected 2 <= n <= {rows.size} (the site's samples with SOC measured)"
        )
    X = paper_preprocessing(lib.units).fit_transform(lib.spectra(rows))
    labelled, test = split_local(X, n, metric=metric)
    role = np.full(lib.n_samples, UNMEASURED, dtype=object)
    role[rows[labelled]] = LOCAL_LABELLED
    role[rows[test]] = LOCAL_TEST
    lib.set_meta(ROLE, role.astype(str))
    return LocalSplit(str(site), int(labelled.size), int(test.size), int(lib.n_samples - rows.size), metric,
                      tuple(lib.sample_id[rows[labelled]].tolist()))
