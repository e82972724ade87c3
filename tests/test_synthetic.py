"""Synthetic library and sites: determinism across workers and chunking, physical plausibility, store I/O."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cross_decomposition import PLSRegression
from sklearn.metrics import r2_score
from typer.testing import CliRunner

from dtl_dist.cli import app
from dtl_dist.engines.dask import map_blocks as dask_map_blocks
from dtl_dist.errors import UserInputError
from dtl_dist.library import SpectralLibrary
from dtl_dist.library.synthetic import (
    GLOBAL_SOC,
    LOCAL_SOC,
    SynthConfig,
    make_library,
    make_site,
    synth,
    write_library,
    write_site,
)
from dtl_dist.spectra.grid import make_grid


@pytest.fixture(scope="module")
def library():
    return make_library(20_000, seed=3)


def assert_same_store(a: SpectralLibrary, b: SpectralLibrary) -> None:
    np.testing.assert_array_equal(a.spectra(), b.spectra())
    np.testing.assert_array_equal(a.sample_id, b.sample_id)
    np.testing.assert_array_equal(a.target("soc"), b.target("soc"))
    assert a.meta_fields == b.meta_fields == ["country", "group", "lat", "lon", "source"]
    for name in a.meta_fields:
        np.testing.assert_array_equal(a.meta(name), b.meta(name))


def test_same_library_for_any_worker_count_and_chunk_rows(tmp_path, dask_client):
    serial = write_library(tmp_path / "serial.zarr", 4_500, seed=7, n_countries=5, chunk_rows=1_000)
    # two worker processes, each opening the temporary store by path; chunks not aligned to the blocks
    parallel = write_library(tmp_path / "dask.zarr", 4_500, seed=7, n_countries=5, chunk_rows=700,
                             map_blocks=dask_map_blocks(dask_client))
    assert_same_store(serial, parallel)
    assert parallel._group["spectra"].chunks == (700, 211)
    memory = make_library(2_100, seed=7, n_countries=5)  # a smaller library is a prefix of a larger one
    np.testing.assert_array_equal(memory.spectra, serial.spectra(slice(0, 2_100)))
    other_seed = make_library(100, seed=8, n_countries=5)
    assert not np.allclose(other_seed.spectra, memory.spectra[:100])


def test_spectra_are_finite_plausible_absorbance(library):
    X = library.spectra
    assert X.shape == (20_000, 211) and X.dtype == np.float32
    assert np.isfinite(X).all()
    assert X.min() > 0.0 and X.max() < 3.5  # log10(1/R): R between 0.0003 and 1
    assert 0.15 < np.median(X[:, -1]) < 0.6 < np.median(X[:, 0]) < 1.5  # dark in the blue, bright in the NIR
    assert np.unique(library.sample_id).size == 20_000
    assert set(library.meta["source"]) == {"synthetic"}
    assert np.unique(library.meta["country"]).size == 10
    assert np.all(np.abs(library.meta["lat"]) < 90) and np.all(np.abs(library.meta["lon"]) <= 180)
    # each group is one spectrometer of one country
    for group in np.unique(library.meta["group"]):
        assert np.unique(library.meta["country"][library.meta["group"] == group]).size == 1


def test_soc_distribution_like_the_global_library_of_table_1(library):
    soc = library.soc
    lo, hi = GLOBAL_SOC["range"]
    assert soc.min() >= lo and soc.max() <= hi
    q1, median, q3 = np.percentile(soc, [25, 50, 75])
    assert 1.1 < median < 1.45  # Table 1: 1.26
    assert 0.45 < q1 < 0.7 and 2.2 < q3 < 3.0  # 0.55 and 2.50
    assert 1.9 < soc.mean() < 2.7 and 2.5 < soc.std() < 4.5  # 2.28 and 3.56


def test_organic_matter_darkens_the_visible(library):
    visible = library.spectra[:, library.wavelengths < 700].mean(axis=1)
    assert np.corrcoef(library.soc, visible)[0, 1] > 0.4


def test_pls_predicts_soc_from_the_spectra(library):
    X, y = library.spectra[:2_000], library.soc[:2_000]
    pls = PLSRegression(n_components=10).fit(X[:1_500], y[:1_500])
    assert r2_score(y[1_500:], pls.predict(X[1_500:]).ravel()) > 0.6


def test_water_and_clay_bands_are_local_maxima(library):
    wl, mean = library.wavelengths, library.spectra.mean(axis=0)

    def peak(lo, hi):
        band = (wl >= lo) & (wl <= hi)
        return wl[band][np.argmax(mean[band])]

    assert 1890 <= peak(1800, 2000) <= 1930  # water
    assert 1400 <= peak(1300, 1500) <= 1430  # water / OH
    # the clay Al-OH band sits above the straight line between its shoulders
    at = {w: mean[np.argmin(np.abs(wl - w))] for w in (2120, 2200, 2260)}
    assert at[2200] > (at[2120] + at[2260]) / 2


def test_site_has_a_narrow_soc_range_and_its_own_instrument(library):
    site = make_site(300, seed=3)
    lo, hi = LOCAL_SOC["range"]
    assert site.soc.min() >= lo and site.soc.max() <= hi
    assert site.soc.std() < 0.5 * library.soc.std()
    assert np.unique(site.meta["group"]).size == 1 and site.meta["group"][0] not in set(library.meta["group"])
    assert site.meta["country"][0] in set(library.meta["country"])
    assert np.ptp(site.meta["lat"]) < 0.2  # a field, not a country
    # domain shift: a library PLS model is biased on the site
    pls = PLSRegression(n_components=10).fit(library.spectra[:3_000], library.soc[:3_000])
    bias = np.mean(pls.predict(site.spectra).ravel() - site.soc)
    assert abs(bias) > 0.2


def test_same_samples_on_another_grid():
    a = make_library(50, seed=1)
    b = make_library(50, seed=1, wavelengths=make_grid(420, 2480, 20))
    assert b.spectra.shape == (50, 104)
    np.testing.assert_array_equal(a.soc, b.soc)
    # same soils: the spectra agree where the grids share bands, up to the white noise
    shared = np.isin(a.wavelengths, b.wavelengths)
    assert np.abs(a.spectra[:, shared] - b.spectra).max() < 0.05


def test_synth_writes_library_and_site_stores(tmp_path):
    config = SynthConfig(tmp_path / "lib.zarr", 2_500, seed=2, grid="400:2500:10", countries=4, chunk_rows=1_000,
                         site_n=60, site_out=tmp_path / "site.zarr")
    library, site = synth(config, progress=False)
    reopened = SpectralLibrary.open(tmp_path / "lib.zarr")
    assert_same_store(library, reopened)
    np.testing.assert_array_equal(reopened.spectra(), make_library(2_500, seed=2, n_countries=4).spectra)
    assert reopened.units == "absorbance" and reopened.attrs["target_units"] == {"soc": "%"}
    assert reopened.provenance[0]["source"] == "synthetic" and reopened.provenance[0]["seed"] == 2
    country = reopened.meta("country")[0]
    assert reopened.by(country=country).n_samples == int(np.sum(reopened.meta("country") == country))
    site_store = SpectralLibrary.open(tmp_path / "site.zarr")
    assert site_store.n_samples == 60
    np.testing.assert_array_equal(site_store.spectra(), make_site(60, seed=2, n_countries=4).spectra)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib.zarr", "site.zarr"]


def test_failed_write_leaves_nothing(tmp_path):
    def fails_after_first_block(fn, blocks):
        fn(blocks[0])
        raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        write_library(tmp_path / "lib.zarr", 3_000, chunk_rows=1_000, map_blocks=fails_after_first_block)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, r"n \(--n\): expected an integer >= 1, got 0"),
    ({"n": 10, "n_countries": 0}, r"--countries.*>= 1"),
    ({"n": 10, "chunk_rows": 0}, r"--chunk-rows.*>= 1"),
    ({"n": 10, "seed": -1}, r"seed.*>= 0"),
])
def test_bad_library_parameters(tmp_path, kwargs, message):
    with pytest.raises(UserInputError, match=message):
        write_library(tmp_path / "lib.zarr", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_bad_site_parameters(tmp_path):
    with pytest.raises(UserInputError, match="0 < min < median < max"):
        write_site(tmp_path / "site.zarr", 50, soc_median=5.0)
    with pytest.raises(UserInputError, match=r"site n \(--site-n\)"):
        write_site(tmp_path / "site.zarr", 1)
    assert list(tmp_path.iterdir()) == []


def test_cli_synth(tmp_path):
    runner = CliRunner()
    out, site = tmp_path / "lib.zarr", tmp_path / "site.zarr"
    args = ["synth", "--n", "1500", "--out", str(out), "--workers", "1", "--countries", "3",
            "--chunk-rows", "500", "--site-n", "40", "--site-out", str(site), "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: 1500 samples x 211 bands" in result.output
    np.testing.assert_array_equal(SpectralLibrary.open(out).spectra(), make_library(1_500, n_countries=3).spectra)
    assert SpectralLibrary.open(site).n_samples == 40

    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already exists" in again.output

    for bad, message in [
        (["--n", "10", "--out", str(tmp_path / "x.zarr"), "--site-n", "5"], "--site-n and --site-out"),
        (["--n", "10", "--out", str(tmp_path / "x.zarr"), "--grid", "400-2500"], "expected START:STOP:STEP"),
        (["--n", "10", "--out", str(tmp_path / "x.zarr"), "--workers", "0"], "--workers"),
    ]:
        result = runner.invoke(app, ["synth", *bad])
        assert result.exit_code == 2 and message in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib.zarr", "site.zarr"]
