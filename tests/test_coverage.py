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
    assert covered["verdict"].startswith("the library holds spectra like the site's") and covered["kind"] == "holds"
    away = library_coverage(library_X, library_y, far, local_y, k=100)
    assert away["share_inside"] == 0 and away["n_like"] < 25 and away["neighbour_ratio"] > 5
    assert away["verdict"].startswith("transfer is unlikely to help") and away["kind"] == "outside"
    assert "the recommendation is chosen among those that use none" in away["verdict"]


def test_a_site_outside_the_library_is_recommended_among_the_models_that_use_none():
    """The coverage guard (dtl_dist.study.models.candidates): outside, Local and local-PLS only; in every other
    case all 14 single models of Fig. 2 and the baselines (the 10 of a study without a country library)."""
    from dtl_dist.study.models import candidates, models_for

    assert candidates(models_for(True), "outside") == ["Local", "local-PLS"]
    assert candidates(models_for(False), "outside") == ["Local", "local-PLS"]
    for kind in ("holds", "few", "part"):
        assert candidates(models_for(True), kind) == ["Local", "Global", "Country", "DTL-I_g", "DTL-I_c", "DTL-R_g",
                                                      "DTL-R_c", "DTL-IR_g", "DTL-IR_c", "local-PLS", "global-PLS",
                                                      "RS-LOCAL-PLS", "spiked-PLS", "MBL"]
        assert len(candidates(models_for(False), kind)) == 10


def test_the_check_tells_a_synthetic_library_rich_in_the_sites_soils_from_one_without():
    """`dtl synth` data (20 nm grid): a library of 3,000 samples plus 1,000 of the site's own soils on its
    spectrometer holds hundreds of spectra among the site's; the same library without the site's country and
    without those holds fewer than k / 4 (bench_study's SYN-with and SYN-without, small)."""
    from dtl_dist.library.synthetic import SiteGenerator, make_library, make_site
    from dtl_dist.spectra.grid import make_grid
    from dtl_dist.spectra.preprocess import SNV

    grid = tuple(make_grid(400, 2500, 20))
    library, site = make_library(3000, 0, wavelengths=grid), make_site(120, 0, wavelengths=grid)
    survey = SiteGenerator(0, grid, 10, 0).rows(1000, 2000)
    snv = SNV()
    L, V, S = (snv.fit_transform(d.spectra.astype(np.float64)) for d in (library, survey, site))
    other = library.meta["country"] != site.meta["country"][0]
    rich = library_coverage(np.vstack([L, V]), np.r_[library.soc, survey.soc], S, site.soc[:30], k=100)
    poor = library_coverage(L[other], library.soc[other], S, site.soc[:30], k=100)
    assert rich["n_like"] >= 500 and rich["neighbour_ratio"] < 0.7
    assert rich["verdict"].startswith("the library holds spectra like the site's")
    assert poor["n_like"] < 25 and poor["neighbour_ratio"] > 0.9
    assert poor["verdict"].startswith("the library holds few of the site's soils, RS-LOCAL has little to find")
    assert (rich["kind"], poor["kind"]) == ("holds", "few")


def test_the_localised_data_are_the_sites_neighbourhood_when_the_library_holds_enough(tmp_path):
    """The site's neighbourhood in the library (dtl_dist.study.instances.neighbourhood): a `dtl synth` library of
    1,500 samples plus 1,500 of the site's own soils gives those (>= 10 k = 500 of them, 98 % or more the site's
    soils); the library alone gives none (RS-LOCAL searches it whole)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from synthetic_cases import GRID, _create

    from dtl_dist.library.synthetic import SiteGenerator, make_library, write_site
    from dtl_dist.study.config import StudyConfig
    from dtl_dist.study.context import StudyContext
    from dtl_dist.study.data import load_study_data
    from dtl_dist.study.instances import neighbourhood

    write_site(tmp_path / "site.zarr", 120, seed=0, wavelengths=GRID)
    library = make_library(1500, 0, wavelengths=GRID)
    survey = SiteGenerator(0, GRID, 10, 0).rows(1000, 2500)
    survey.sample_id = np.array([f"survey-{i}" for i in survey.sample_id])
    pools = {}
    for name, parts in (("rich", [library, survey]), ("poor", [library])):
        config = StudyConfig(library=str(_create(tmp_path / f"{name}.zarr", parts)), site=str(tmp_path / "site.zarr"),
                             out=str(tmp_path / name), k=50, workers=0)
        data = load_study_data(config, tmp_path / name)
        pools[name] = (neighbourhood(StudyContext(config, data, tmp_path / name), data.library), data.library)
    pool, source = pools["rich"]
    assert pool.size >= 500 and np.mean(np.char.startswith(source.view.sample_id[pool].astype(str), "survey")) >= 0.98
    assert pools["poor"][0] is None
