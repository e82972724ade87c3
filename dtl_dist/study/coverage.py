"""How well a library covers a site's spectra: a cheap check, said before a study spends hours (paper 2.3.2, 4).

Transfer, of instances (RS-LOCAL) or of representations, can only give what the library holds: the paper's
25.8 % gain came from a 50,422-sample library with soils like each site's. The check reads the SNV spectra of
the library (a seeded sample of at most :data:`MAX_LIBRARY_ROWS`) and of the whole site (spectra only, no
local_test SOC), and the library's and the n labelled samples' SOC:

- a PCA of the library spectra (components for 99 % of the variance, at most :data:`MAX_COMPONENTS`); a site
  spectrum is *inside the library's envelope* when both its Hotelling T^2 (distance within the PCA space) and
  its Q residual (distance off it) are within the 99th percentiles of the library's own samples
  (``share_inside``);
- ``neighbour_ratio``: the median Mahalanobis distance (standardised PCA scores, plus the distance off the PCA
  space in units of the library's root mean Q) of a site spectrum to its :data:`NEIGHBOURS` nearest library
  spectra, over the same for a library spectrum to its nearest other ones
  (about 1: the site sits in a part of the library as dense as the rest; much more: far from it);
- ``n_like``: library samples whose distance to the nearest site spectrum is within the 90th percentile of the
  site spectra's distances to their nearest other site spectrum (library samples among the site's own), to
  compare with the k samples RS-LOCAL transfers;
- ``soc_share``: the share of the library whose SOC lies within the labelled samples' SOC range.

:func:`verdict` says it in words: a site outside the library (transfer unlikely to help: the study then recommends
among the models that use no library, :func:`dtl_dist.study.models.candidates`), a library with few of
the site's soils (RS-LOCAL has little to find; transferred representations may still help: on `dtl synth` data
without the site's country DTL-IR gained nearly as much as with it), or one that holds them. bench_study
measures how well it predicts the gain of the best transfer.
"""

from __future__ import annotations

import numpy as np

MAX_LIBRARY_ROWS = 20_000
MAX_COMPONENTS = 20
NEIGHBOURS = 10
OUTSIDE_SHARE = 0.25
FAR_RATIO = 5.0
"""A site with fewer of its spectra inside the library's envelope, or with nearest library neighbours farther
than this many times a library spectrum's own, lies outside the library (CV.98: 0 % and 12x, and every
transfer lost; UL.120, SL.125, SC.93 and the synthetic sites: 48-100 % and 0.35-3.3x; then on sites not used to
set them, SP.231: 8 % and 4.9x, SSP.460: 0 % and 7.1x, and no transfer beat Local on either; benchmarks/README.md)."""


def _pca(X: np.ndarray):
    from sklearn.decomposition import PCA

    full = PCA(min(MAX_COMPONENTS, *X.shape), svd_solver="full").fit(X)
    ncomp = int(np.searchsorted(np.cumsum(full.explained_variance_ratio_), 0.99) + 1)
    ncomp = min(ncomp, full.n_components_)
    return full.components_[:ncomp], full.mean_, np.sqrt(full.explained_variance_[:ncomp])


def _scores(X, components, mean, sd) -> tuple[np.ndarray, np.ndarray]:
    centred = X - mean
    t = centred @ components.T
    q = np.sum((centred - t @ components) ** 2, axis=1)
    return t / sd, q


def _coordinates(library_X: np.ndarray, site_X: np.ndarray) -> tuple:
    """Library and site in the library's PCA space: T^2 and Q of each, and the coordinates distances are measured
    in (standardised scores plus the distance off the PCA space in units of the library's root mean Q)."""
    components, mean, sd = _pca(library_X)
    t_lib, q_lib = _scores(library_X, components, mean, sd)
    t_site, q_site = _scores(site_X, components, mean, sd)
    q_scale = np.sqrt(np.mean(q_lib)) or 1.0
    at_lib = np.column_stack([t_lib, np.sqrt(q_lib) / q_scale])
    at_site = np.column_stack([t_site, np.sqrt(q_site) / q_scale])
    return (np.sum(t_lib ** 2, 1), q_lib), (np.sum(t_site ** 2, 1), q_site), at_lib, at_site, sd.size


def _among_site(at_lib: np.ndarray, at_site: np.ndarray) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    site_index = NearestNeighbors(n_neighbors=2).fit(at_site)
    spacing = np.percentile(site_index.kneighbors(at_site)[0][:, 1], 90)
    return site_index.kneighbors(at_lib, n_neighbors=1)[0][:, 0] <= spacing


def like_site(library_X: np.ndarray, site_X: np.ndarray) -> np.ndarray:
    """Which library spectra lie among the site's (``n_like`` of the module docstring), one bool per row."""
    *_, at_lib, at_site, _ = _coordinates(np.asarray(library_X, dtype=np.float64), np.asarray(site_X, dtype=np.float64))
    return _among_site(at_lib, at_site)


def library_coverage(library_X: np.ndarray, library_y: np.ndarray, site_X: np.ndarray, local_y: np.ndarray,
                     *, k: int = 100, seed: int = 0) -> dict:
    """The coverage figures of the module docstring for SNV spectra ``library_X`` (with SOC ``library_y``) and
    ``site_X`` (every site spectrum), the labelled SOC ``local_y`` and RS-LOCAL's ``k``, with the verdict."""
    from sklearn.neighbors import NearestNeighbors

    library_X = np.asarray(library_X, dtype=np.float64)
    site_X = np.asarray(site_X, dtype=np.float64)
    if library_X.shape[0] > MAX_LIBRARY_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(library_X.shape[0], MAX_LIBRARY_ROWS, replace=False))
        library_X, library_y = library_X[rows], np.asarray(library_y)[rows]
    library_y = np.asarray(library_y)
    (t2_lib, q_lib), (t2_site, q_site), at_lib, at_site, ncomp = _coordinates(library_X, site_X)
    inside = (t2_site <= np.percentile(t2_lib, 99)) & (q_site <= np.percentile(q_lib, 99))
    neighbours = min(NEIGHBOURS, at_lib.shape[0] - 1)
    index = NearestNeighbors(n_neighbors=neighbours + 1).fit(at_lib)
    lib_dist = index.kneighbors(at_lib)[0][:, 1:].mean(1)  # without itself
    site_dist = index.kneighbors(at_site, n_neighbors=neighbours)[0].mean(1)
    n_like = int(_among_site(at_lib, at_site).sum())
    lo, hi = float(np.min(local_y)), float(np.max(local_y))
    figures = {
        "n_library_checked": int(library_X.shape[0]), "n_site": int(site_X.shape[0]), "n_components": int(ncomp),
        "share_inside": float(inside.mean()), "neighbour_ratio": float(np.median(site_dist) / np.median(lib_dist)),
        "n_like": n_like, "k": int(k),
        "soc_share": float(np.mean((library_y >= lo) & (library_y <= hi))), "local_soc_range": [lo, hi],
    }
    return {**figures, "kind": kind(figures), "verdict": verdict(figures)}


def site_coverage(data, k: int) -> dict:
    """:func:`library_coverage` of a study's global library (a seeded sample of its rows when larger than
    :data:`MAX_LIBRARY_ROWS`) and its site (the n labelled and the local_test spectra)."""
    from dtl_dist.spectra.preprocess import SNV

    library = data.library
    rows = np.arange(library.size)
    if library.size > MAX_LIBRARY_ROWS:
        rows = np.sort(np.random.default_rng(data.seed).choice(library.size, MAX_LIBRARY_ROWS, replace=False))
    site_X = data.local_X if not len(data.test_ids) else np.vstack([data.local_X,
                                                                   SNV().fit_transform(data.test_absorbance)])
    return library_coverage(library.spectra(rows), library.y[rows], site_X, data.local_y, k=k, seed=data.seed)


def kind(figures: dict) -> str:
    """Which case of the verdict the coverage figures fall in: ``holds`` (the library holds spectra like the
    site's), ``outside`` (the site lies outside it: :data:`OUTSIDE_SHARE`, :data:`FAR_RATIO`), ``few`` (few of the
    site's soils) or ``part`` (covers it in part)."""
    if figures["share_inside"] >= 0.9 and figures["n_like"] >= figures["k"]:
        return "holds"
    if figures["share_inside"] < OUTSIDE_SHARE or figures["neighbour_ratio"] > FAR_RATIO:
        return "outside"
    return "few" if figures["n_like"] < figures["k"] / 4 else "part"


def verdict(figures: dict) -> str:
    """The coverage figures in words: can transfer help, and why (or why not)."""
    facts = (f"{figures['share_inside']:.0%} of the site's {figures['n_site']} spectra lie inside the library's "
             f"envelope (PCA, 99th percentiles), their nearest library neighbours are "
             f"{figures['neighbour_ratio']:.1f}x as far as a library spectrum's own, and {figures['n_like']} of the "
             f"{figures['n_library_checked']} library spectra checked lie among the site's (RS-LOCAL transfers "
             f"k = {figures['k']}); {figures['soc_share']:.0%} of the library's SOC is within the labelled range "
             f"{figures['local_soc_range'][0]:.2f}-{figures['local_soc_range'][1]:.2f} %")
    return {
        "holds": f"the library holds spectra like the site's, transfer can help: {facts}.",
        "outside": f"transfer is unlikely to help, the site's spectra lie outside the library's: {facts}. The models "
                   "that use the library are still built and reported, but the recommendation is chosen among "
                   "those that use none (Local, local-PLS and their ensembles).",
        "few": f"the library holds few of the site's soils, RS-LOCAL has little to find: {facts}. Transfer of "
               "representations can still help where the library's soils share the site's spectral-SOC relation; "
               "the study's cv_rmse will say.",
        "part": f"the library covers the site in part, transfer may help a little: {facts}.",
    }[kind(figures)]
