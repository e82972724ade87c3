"""The library-coverage check of a study (:mod:`dtl_dist.study.coverage`) on spectra of known geometry."""

from __future__ import annotations

import numpy as np
import pytest

from dtl_dist.study.coverage import library_coverage


def test_library_coverage_tells_a_covered_site_from_a_far_one():
    """Library: 3,000 spectra on a 6-dimensional cloud; a site drawn from the same cloud is inside the
    envelope with many library spectra among its own, a site moved off the cloud is not; the SOC share is counted
    by hand."""
    rng = np.random.default_rng(4)
    basis = rng.normal(size=(6, 50))
    library_scores = rng.normal(size=(3000, 6))
    library_X = library_scores @ basis + rng.normal(0, 0.01, (3000, 50))
    library_y = np.linspace(0.1, 10, 3000)
    site_scores = rng.normal(0, 1, (100, 6))
    near = site_scores @ basis + rng.normal(0, 0.01, (100, 50))
    far = near + 3.0 * rng.normal(size=50)  # off the library's subspace
    local_y = np.array([1.0, 2.0, 3.0])
    covered = library_coverage(library_X, library_y, near, local_y, k=100)
    assert covered["share_inside"] >= 0.95 and covered["n_like"] >= 100 and covered["neighbour_ratio"] < 2
    assert covered["soc_share"] == pytest.approx(np.mean((library_y >= 1) & (library_y <= 3)))
    assert covered["verdict"].startswith("the library holds spectra like the site's")
    away = library_coverage(library_X, library_y, far, local_y, k=100)
    assert away["share_inside"] == 0 and away["n_like"] < 25 and away["neighbour_ratio"] > 5
    assert away["verdict"].startswith("transfer is unlikely to help")
