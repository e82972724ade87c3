"""bench_rslocal_overfit: does RS-LOCAL find the library samples like the site's, or fit the n labelled ones?

A synthetic site (`dtl synth --site-n 120`, seed 0, 20 nm grid; n = 30 by Kennard-Stone) and a library of 3,000
`dtl synth` samples plus 1,000 samples of the site's own soils on its spectrometer (25 % of the library: the
samples transfer should pick). RS-LOCAL (k = 100, the study's settings) runs twice: on the library as it is, and
with the 3,000 other samples' SOC shuffled among them (useless samples: any of them that RS-LOCAL keeps was kept
by chance); then on the library spectra that lie among the site's (the coverage check's ``n_like``
neighbourhood, :func:`dtl_dist.study.coverage.like_site`, from the site's spectra alone). Printed: the share of the
site's soils among the k selected, the median subset RMSE on the n local samples at the start and the end, and the
test RMSE of PLS on the k + n localised data against local PLS; then, as references for RS-LOCAL's choice within
that neighbourhood, PLS on k samples drawn at random from it (five draws) and on all of it, each with the n.

Usage: python benchmarks/bench_rslocal_overfit.py
"""

from __future__ import annotations

import os
import time

import numpy as np

from dtl_dist.library.synthetic import SiteGenerator, make_library, make_site
from dtl_dist.linear.pls_kernel import pls1_cv_ncomp, pls1_fit_predict
from dtl_dist.nn.folds import kfold_assignment
from dtl_dist.select.kennard_stone import split_local
from dtl_dist.select.rslocal import rslocal
from dtl_dist.spectra.grid import make_grid
from dtl_dist.spectra.preprocess import SNV
from dtl_dist.study.coverage import like_site


def pls(X, y, X_test):
    """PLS with components by 10-fold CV (as the study's PLS baselines)."""
    folds = kfold_assignment(len(y), 10, 1)
    splits = [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in range(10)]
    ncomp, _ = pls1_cv_ncomp(X, y, min(20, len(y) - 4), folds=splits, dtype="float64")
    return pls1_fit_predict(X[None], y[None], X_test, ncomp, dtype="float64")[0]


def main() -> None:
    grid = tuple(make_grid(400, 2500, 20))
    library, site = make_library(3000, 0, wavelengths=grid), make_site(120, 0, wavelengths=grid)
    survey = SiteGenerator(0, grid, 10, 0).rows(1000, 2000)
    S = SNV().fit_transform(site.spectra.astype(np.float64))
    labelled, test = split_local(S, 30)
    L = np.vstack([SNV().fit_transform(library.spectra.astype(np.float64)),
                   SNV().fit_transform(survey.spectra.astype(np.float64))])
    y = np.concatenate([library.soc, survey.soc])
    site_soils = np.r_[np.zeros(3000, bool), np.ones(1000, bool)]

    def rmse(p):
        return float(np.sqrt(np.mean((p - site.soc[test]) ** 2)))

    print(f"load {os.getloadavg()[0]:.1f}; local PLS test RMSE {rmse(pls(S[labelled], site.soc[labelled], S[test])):.3f}")
    print("| library SOC | share of the site's soils in the k selected | median subset RMSE first / last iteration | "
          "PLS on k + n: test RMSE | s |")
    print("|---|---:|---:|---:|---:|")
    shuffled = y.copy()
    shuffled[:3000] = np.random.default_rng(0).permutation(y[:3000])
    near = np.flatnonzero(like_site(L, S))
    print(f"library spectra among the site's: {near.size}, {site_soils[near].mean():.0%} of them the site's soils")
    for name, target, pool in (("as measured", y, np.arange(y.size)), ("other samples' SOC shuffled", shuffled,
                                                                          np.arange(y.size)),
                               ("as measured, among the site's spectra only", y, near)):
        start = time.perf_counter()
        result = rslocal(L[pool].astype(np.float32), target[pool], S[labelled].astype(np.float32),
                         site.soc[labelled], k=100, seed=0)
        rows = pool[result.selected]
        localised = pls(np.vstack([L[rows], S[labelled]]), np.r_[target[rows], site.soc[labelled]], S[test])
        print(f"| {name} | {site_soils[rows].mean():.0%} (library: 25 %) | {result.trace[0]['score_q50']:.3f} / "
              f"{result.trace[-1]['score_q50']:.3f} | {rmse(localised):.3f} | {time.perf_counter() - start:.0f} |")
    rng = np.random.default_rng(0)
    draws = [rng.choice(near, 100, replace=False) for _ in range(5)]
    for name, choices in (("k at random among the site's spectra (5 draws)", draws),
                          ("all the site's spectra", [near])):
        scores = [rmse(pls(np.vstack([L[rows], S[labelled]]), np.r_[y[rows], site.soc[labelled]], S[test]))
                  for rows in choices]
        print(f"| {name} | {np.mean([site_soils[rows].mean() for rows in choices]):.0%} | | "
              f"{' '.join(f'{v:.3f}' for v in scores)} | |")


if __name__ == "__main__":
    main()
