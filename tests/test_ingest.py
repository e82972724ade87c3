"""Ingestion (issue 2, items 4 and 10): CSV/Parquet/.npz/LimeSoDa -> absorbance on a grid, SOC %, streaming,
atomic writes and appends, and every bad input refused with a message naming file, row or column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import limesoda_site
from dtl_dist.errors import UserInputError
from dtl_dist.library import SpectralLibrary
from dtl_dist.library.ingest import SOM_TO_SOC, Source, ingest, limesoda_source
from dtl_dist.library.real_data import build_real_library, data_dir, library_sources
from dtl_dist.library.summary import soc_statistics, summarise

SRC_WL = np.arange(400.0, 520.0, 5.0)  # 24 source bands
GRID = "410:500:10"
GRID_WL = np.arange(410.0, 501.0, 10.0)


def _table(n=12, seed=0, names=None):
    rng = np.random.default_rng(seed)
    refl = rng.uniform(0.05, 0.9, (n, SRC_WL.size))
    cols = names or [f"{w:g}" for w in SRC_WL]
    frame = pd.DataFrame(refl, columns=cols)
    frame.insert(0, "id", [f"p{i:03d}" for i in range(n)])
    frame["soc"] = rng.uniform(0.2, 6.0, n)
    frame["site"] = ["a", "b"] * (n // 2)
    frame["latitude"] = rng.uniform(-35, -30, n)
    return frame, refl


def _expected(refl, units_top=1.0):
    """Independent reference: log10(top/R) then np.interp band by band."""
    absorb = np.log10(units_top / refl)
    return np.array([np.interp(GRID_WL, SRC_WL, row) for row in absorb], dtype=np.float32)


def _csv(tmp_path, frame, name="data.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _src(path, **kw):
    kw = {"units": "reflectance_fraction", "target": "soc", "id_column": "id", **kw}
    return Source(str(path), **kw)


def _listing(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


def _snapshot(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_csv_to_absorbance_on_grid(tmp_path):
    frame, refl = _table()
    path = _csv(tmp_path, frame)
    lib = ingest([_src(path, meta=(("site", "site"), ("lat", "latitude")), country="AU", name="nsw")],
                 tmp_path / "lib.zarr", grid=GRID)
    np.testing.assert_allclose(lib.spectra(), _expected(refl), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(lib.wavelengths, GRID_WL)
    np.testing.assert_allclose(lib.target("soc"), frame["soc"])
    np.testing.assert_array_equal(lib.sample_id, frame["id"])
    np.testing.assert_array_equal(lib.meta("site"), frame["site"])
    np.testing.assert_allclose(lib.meta("lat"), frame["latitude"])
    assert np.isnan(lib.meta("lon")).all()
    assert set(lib.meta("country")) == {"AU"} and set(lib.meta("source")) == {"nsw"}
    assert lib.units == "absorbance" and lib.preprocessing == ["log10(1/R)", "resample 410:500:10 nm linear"]
    assert lib.attrs["target_units"] == {"soc": "%"}
    (record,) = lib.provenance
    assert record["rows"] == 12 and record["source"] == "nsw" and record["file"] == str(path.resolve())
    assert len(record["sha256"]) == 64 and record["dtl_dist_version"] and record["time"]


def test_ossl_names_parquet_npz_and_percent_agree(tmp_path):
    frame, refl = _table()
    ossl = frame.rename(columns={f"{w:g}": f"scan_visnir.{w:g}_ref" for w in SRC_WL})
    ossl.to_parquet(tmp_path / "ossl.parquet")
    pct = frame.copy()
    pct[[f"{w:g}" for w in SRC_WL]] *= 100
    np.savez(tmp_path / "arr.npz", X=refl.astype(np.float32), wavelengths=SRC_WL, sample_id=frame["id"].to_numpy(dtype=str),
             y=frame["soc"].to_numpy(), target_name="SOC", target_unit="%")
    a = ingest([_src(tmp_path / "ossl.parquet")], tmp_path / "a.zarr", grid=GRID, block_rows=5)
    b = ingest([_src(_csv(tmp_path, pct, "pct.csv"), units="reflectance_percent")], tmp_path / "b.zarr", grid=GRID)
    c = ingest([Source(str(tmp_path / "arr.npz"), units="reflectance_fraction")], tmp_path / "c.zarr", grid=GRID)
    for lib in (a, b, c):
        np.testing.assert_allclose(lib.spectra(), _expected(refl), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(lib.target("soc"), frame["soc"])
        np.testing.assert_array_equal(lib.sample_id, frame["id"])
    absorb = pd.DataFrame(np.log10(1 / refl), columns=[f"{w:g}" for w in SRC_WL]).assign(soc=frame["soc"])
    d = ingest([Source(str(_csv(tmp_path, absorb, "abs.csv")), units="absorbance", target="soc", name="abs")],
               tmp_path / "d.zarr", grid=GRID)
    np.testing.assert_allclose(d.spectra(), _expected(refl), rtol=1e-5, atol=1e-6)
    assert list(d.sample_id[:2]) == ["abs/1", "abs/2"]  # generated ids: <name>/<1-based row>


def test_streaming_in_blocks_equals_one_block(tmp_path):
    frame, refl = _table(n=40)
    path = _csv(tmp_path, frame)
    whole = ingest([_src(path)], tmp_path / "whole.zarr", grid=GRID, block_rows=1000)
    blocks = ingest([_src(path)], tmp_path / "blocks.zarr", grid=GRID, block_rows=7)
    np.testing.assert_array_equal(whole.spectra(), blocks.spectra())
    np.testing.assert_array_equal(whole.sample_id, blocks.sample_id)


def test_ids_are_text(tmp_path):
    frame, _ = _table(n=4)
    frame["id"] = ["007", "7", "0.50", "x"]
    lib = ingest([_src(_csv(tmp_path, frame))], tmp_path / "lib.zarr", grid=GRID)
    assert list(lib.sample_id) == ["007", "7", "0.50", "x"]


def test_limesoda_site_matches_package_data_and_som_scale(tmp_path):
    lib = ingest(["UL.120"], tmp_path / "ul.zarr", grid="420:2500:10")
    z = limesoda_site("UL.120")
    grid = np.arange(420.0, 2501.0, 10.0)
    expected = np.array([np.interp(grid, z["wavelengths"], np.log10(100.0 / row)) for row in z["X"]])
    np.testing.assert_allclose(lib.spectra(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lib.target("soc"), z["y"] / 1.724, rtol=1e-6)
    assert list(lib.sample_id[:2]) == ["UL.120/1", "UL.120/2"]
    assert set(lib.meta("country")) == {"SE"} and set(lib.meta("group")) == {"LimeSoDa"}
    assert "1/1.724" in lib.provenance[0]["target_to_soc"]


TABLE1 = [("mean", "mean"), ("sd", "std"), ("min", "min"), ("q1", "25%"), ("median", "50%"), ("q3", "75%"),
          ("max", "max")]


def test_real_library_from_the_limesoda_package_and_table1(tmp_path, monkeypatch):
    monkeypatch.delenv("DTL_DATA", raising=False)
    real = build_real_library(tmp_path / "real", data_dir=data_dir(), progress=False)
    lib = real.library
    assert not real.geeves and sorted(real.sites) == ["CV.98", "SC.93", "SL.125", "UL.120"]
    assert lib.n_samples == 98 + 93 + 125 + 120 and lib.n_bands == 209
    counts = dict(zip(*np.unique(lib.meta("country"), return_counts=True)))
    assert counts == {"BR": 93, "CH": 98, "SE": 245}
    rows = {(r["by"], r["name"]): r for r in summarise(lib)}
    sweden = pd.Series(np.concatenate([limesoda_site(s)["y"] for s in ("SL.125", "UL.120")]) / 1.724).describe()
    for key, ref in TABLE1:  # pandas as the reference for Table 1 statistics
        assert rows[("country", "SE")][key] == pytest.approx(sweden[ref], rel=1e-5)
    site = real.sites["CV.98"]
    assert site.n_samples == 98 and set(site.meta("source")) == {"CV.98"}
    np.testing.assert_array_equal(site.spectra(), lib.by(source="CV.98").spectra())


def test_real_library_with_the_users_geeves_file(tmp_path, dtl_data, monkeypatch):
    monkeypatch.setenv("DTL_DATA", str(dtl_data))
    real = build_real_library(tmp_path / "real", sites=("CV.98",), data_dir=data_dir(), progress=False)
    assert real.geeves
    counts = dict(zip(*np.unique(real.library.meta("country"), return_counts=True)))
    assert counts == {"AU": 391, "CH": 98}
    geeves = np.load(dtl_data / "geeves_nsw" / "datsoilspc.npz", allow_pickle=False)["y"].astype(np.float64)
    described = pd.Series(geeves).describe()
    au = {(r["by"], r["name"]): r for r in summarise(real.library)}[("country", "AU")]
    assert au["K"] == 391
    for key, ref in TABLE1:
        assert au[key] == pytest.approx(described[ref], rel=1e-6)


def test_data_folder_that_is_missing_or_lacks_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DTL_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(UserInputError, match=r"DTL_DATA=.*nowhere: no such folder"):
        data_dir()
    with pytest.raises(UserInputError, match=r"--data-dir=.*nowhere: no such folder"):
        data_dir(tmp_path / "nowhere")
    monkeypatch.setenv("DTL_DATA", str(tmp_path))
    with pytest.raises(UserInputError, match=r"no geeves_nsw/datsoilspc.npz"):
        library_sources(["CV.98"], data_dir())
    monkeypatch.setenv("DTL_DATA", "")
    assert data_dir() is None


def test_soc_statistics_hand_values():
    stats = soc_statistics([1.0, 2.0, 3.0, 4.0, np.nan])
    assert stats == {"K": 4, "missing": 1, "mean": 2.5, "sd": pytest.approx(1.2909944487), "min": 1.0,
                     "q1": 1.75, "median": 2.5, "q3": 3.25, "max": 4.0}
    assert soc_statistics([np.nan])["mean"] is None


def test_append_source_and_failed_append_leaves_store_unchanged(tmp_path):
    frame, refl = _table(n=10)
    first = ingest([_src(_csv(tmp_path, frame))], tmp_path / "lib.zarr", grid=GRID)
    before = _snapshot(tmp_path / "lib.zarr")
    more, more_refl = _table(n=6, seed=1)
    more["id"] = [f"q{i}" for i in range(6)]
    more.loc[4, "soc"] = 130.0
    with pytest.raises(UserInputError, match=r"more.csv: row 5, column 'soc': SOC 130 %"):
        ingest([_src(_csv(tmp_path, more, "more.csv"))], first.path, append=True)
    assert _snapshot(tmp_path / "lib.zarr") == before
    assert _listing(tmp_path) == ["data.csv", "lib.zarr", "more.csv"]
    with pytest.raises(UserInputError, match=r"grid mismatch on append: the store has 10 bands 410-500 nm"):
        ingest([_src(tmp_path / "more.csv")], first.path, append=True, grid="400:500:10")
    more.loc[4, "soc"] = 1.3
    lib = ingest([_src(_csv(tmp_path, more, "more.csv"), country="SE")], first.path, append=True)
    assert lib.n_samples == 16 and len(lib.provenance) == 2
    np.testing.assert_allclose(lib.spectra()[10:], _expected(more_refl), rtol=1e-5, atol=1e-6)
    assert list(lib.meta("country")) == [""] * 10 + ["SE"] * 6
    with pytest.raises(UserInputError, match=r"more.csv: row 1: duplicate sample id 'q0' \(first seen in .*lib.zarr"):
        ingest([_src(tmp_path / "more.csv")], first.path, append=True)
    assert _listing(tmp_path) == ["data.csv", "lib.zarr", "more.csv"]


def test_several_sources_share_one_store_and_ids_must_differ(tmp_path):
    frame, _ = _table(n=6)
    a = _csv(tmp_path, frame, "a.csv")
    b = _csv(tmp_path, frame, "b.csv")
    with pytest.raises(UserInputError, match=r"b.csv: row 1: duplicate sample id 'p000' \(first seen in .*a.csv, row 1"):
        ingest([_src(a), _src(b)], tmp_path / "lib.zarr", grid=GRID)
    assert not (tmp_path / "lib.zarr").exists()
    lib = ingest([_src(a, country="AU"), _src(b, id_column=None, name="b")], tmp_path / "lib.zarr", grid=GRID)
    assert lib.n_samples == 12 and lib.sample_id[6] == "b/1"
    assert list(lib.by(country="AU").sample_id) == list(frame["id"])


# --- bad input: each refused with a message naming file / row / column, and nothing written ---------------

def _bad(tmp_path, frame, match, *, name="bad.csv", **kw):
    path = _csv(tmp_path, frame, name)
    with pytest.raises(UserInputError, match=match):
        ingest([_src(path, **kw)], tmp_path / "lib.zarr", grid=GRID, block_rows=4)
    assert _listing(tmp_path) == [name]


@pytest.mark.parametrize("value, match", [
    (np.nan, r"bad.csv: row 7, column '430': spectral value nan \(missing or infinite\)"),
    (np.inf, r"bad.csv: row 7, column '430': spectral value inf"),
    (0.0, r"bad.csv: row 7, column '430': reflectance 0 is outside \(0, 1\]"),
    (-0.1, r"row 7, column '430': reflectance -0.1 is outside"),
    (42.0, r"row 7, column '430': reflectance 42 is outside \(0, 1\] .*reflectance_percent"),
])
def test_bad_spectral_values(tmp_path, value, match):
    frame, _ = _table()
    frame.loc[6, "430"] = value
    _bad(tmp_path, frame, match)


def test_reflectance_percent_above_100(tmp_path):
    frame, _ = _table()
    frame[[f"{w:g}" for w in SRC_WL]] *= 100
    frame.loc[2, "500"] = 100.5
    _bad(tmp_path, frame, r"row 3, column '500': reflectance 100.5 is outside \(0, 100\]", units="reflectance_percent")


def test_non_numeric_cells(tmp_path):
    frame, _ = _table()
    frame["450"] = frame["450"].astype(object)
    frame.loc[9, "450"] = "0.3x"
    _bad(tmp_path, frame, r"bad.csv: row 10, column '450': '0.3x' is not a number")
    frame, _ = _table()
    frame["soc"] = frame["soc"].astype(object)
    frame.loc[1, "soc"] = "<0.1"
    _bad(tmp_path, frame, r"row 2, column 'soc': '<0.1' is not a number")


@pytest.mark.parametrize("swap, match", [
    ({"405": "430", "430": "405"}, r"bad.csv: spectral columns: wavelengths are not increasing at position 2"),
    ({"405": "400.0"}, r"bad.csv: spectral columns: duplicated wavelength 400 nm"),
    ({"405": "400"}, r"bad.csv: column '400' appears twice"),
])
def test_bad_wavelength_columns(tmp_path, swap, match):
    frame, _ = _table()
    frame.columns = [swap.get(c, c) for c in frame.columns]
    _bad(tmp_path, frame, match)


def test_duplicate_ids_in_one_file(tmp_path):
    frame, _ = _table()
    frame.loc[9, "id"] = "p002"
    _bad(tmp_path, frame, r"bad.csv: row 10: duplicate sample id 'p002' \(first seen in .*bad.csv, row 3\)")


@pytest.mark.parametrize("declared, match", [
    ({"target": "SOC"}, r"bad.csv: missing target column 'SOC'; non-spectral columns are \['id', 'soc', 'site'"),
    ({"target": None}, r"bad.csv: missing target column; give --target"),
    ({"id_column": "sample"}, r"bad.csv: missing id column 'sample'"),
    ({"meta": (("depth", "depth"),)}, r"missing meta depth column 'depth'"),
    ({"units": None}, r"bad.csv: spectral units None: declare one of"),
    ({"target_unit": "g/kg"}, r"target 'soc' is in 'g/kg', not %; give --target-scale"),
])
def test_missing_declarations(tmp_path, declared, match):
    frame, _ = _table()
    _bad(tmp_path, frame, match, **declared)


@pytest.mark.parametrize("soc, match", [
    (-0.5, r"row 4, column 'soc': SOC -0.5 % \(-0.5 x 1\) is outside 0-100 %"),
    (250.0, r"row 4, column 'soc': SOC 250 %"),
    (np.inf, r"row 4, column 'soc': SOC inf %"),
])
def test_bad_soc(tmp_path, soc, match):
    frame, _ = _table()
    frame.loc[3, "soc"] = soc
    _bad(tmp_path, frame, match)


def test_target_scale_and_som(tmp_path):
    frame, _ = _table(n=4)
    path = _csv(tmp_path, frame)
    lib = ingest([_src(path, target_unit="g/kg", target_scale=0.1)], tmp_path / "a.zarr", grid=GRID)
    np.testing.assert_allclose(lib.target("soc"), frame["soc"] * 0.1)
    lib = ingest([_src(path, som=True)], tmp_path / "b.zarr", grid=GRID)
    np.testing.assert_allclose(lib.target("soc"), frame["soc"] * SOM_TO_SOC)
    with pytest.raises(UserInputError, match="either --som or --target-scale"):
        ingest([_src(path, som=True, target_scale=0.5)], tmp_path / "c.zarr", grid=GRID)


def test_npz_som_and_units_declared_in_file(tmp_path):
    frame, refl = _table(n=4)
    np.savez(tmp_path / "som.npz", X=refl, wavelengths=SRC_WL, y=frame["soc"].to_numpy(), target_name="SOM",
             target_unit="%")
    with pytest.raises(UserInputError, match=r"som.npz: target 'y' is soil organic matter \(SOM\); pass --som"):
        ingest([Source(str(tmp_path / "som.npz"), units="reflectance_fraction")], tmp_path / "a.zarr", grid=GRID)
    np.savez(tmp_path / "gdm.npz", X=refl, wavelengths=SRC_WL, y=frame["soc"].to_numpy(), target_unit="g dm-3")
    with pytest.raises(UserInputError, match=r"gdm.npz: target 'y' is in 'g dm-3', not %"):
        ingest([Source(str(tmp_path / "gdm.npz"), units="reflectance_fraction")], tmp_path / "a.zarr", grid=GRID)
    with pytest.raises(UserInputError, match=r"MG.44: target 'SOC_target' is in 'g dm-3', not %"):
        ingest([limesoda_source("MG.44")], tmp_path / "a.zarr", grid="440:2150:10")  # decimal wl_431.6 names
    assert _listing(tmp_path) == ["gdm.npz", "som.npz"]


def test_npz_refuses_pickle_and_bad_archives(tmp_path):
    np.savez(tmp_path / "obj.npz", X=np.array([[0.5, 0.5]], dtype=object), wavelengths=[400.0, 410.0])
    with pytest.raises(UserInputError, match=r"obj.npz: cannot read without pickle"):
        ingest([Source(str(tmp_path / "obj.npz"), units="reflectance_fraction")], tmp_path / "a.zarr")
    (tmp_path / "fake.npz").write_bytes(b"not a zip archive")
    with pytest.raises(UserInputError, match=r"fake.npz: not a readable .npz archive"):
        ingest([Source(str(tmp_path / "fake.npz"), units="reflectance_fraction")], tmp_path / "a.zarr")
    np.savez(tmp_path / "empty.npz", X=np.zeros((0, 3)), wavelengths=[400.0, 410.0, 420.0])
    with pytest.raises(UserInputError, match=r"empty.npz: X has shape \(0, 3\)"):
        ingest([Source(str(tmp_path / "empty.npz"), units="reflectance_fraction")], tmp_path / "a.zarr")
    assert _listing(tmp_path) == ["empty.npz", "fake.npz", "obj.npz"]


def test_empty_files(tmp_path):
    (tmp_path / "zero.csv").write_text("")
    with pytest.raises(UserInputError, match=r"zero.csv: empty file"):
        ingest([_src(tmp_path / "zero.csv")], tmp_path / "lib.zarr", grid=GRID)
    frame, _ = _table()
    frame.iloc[:0].to_csv(tmp_path / "header.csv", index=False)
    with pytest.raises(UserInputError, match=r"header.csv: no data rows"):
        ingest([_src(tmp_path / "header.csv")], tmp_path / "lib.zarr", grid=GRID)
    frame.iloc[:0].to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(UserInputError, match=r"empty.parquet: no data rows"):
        ingest([_src(tmp_path / "empty.parquet")], tmp_path / "lib.zarr", grid=GRID)
    assert _listing(tmp_path) == ["empty.parquet", "header.csv", "zero.csv"]


def test_grid_outside_measured_range_and_bad_grid(tmp_path):
    frame, _ = _table()
    path = _csv(tmp_path, frame, "bad.csv")
    with pytest.raises(UserInputError, match=r"bad.csv: spectra cover 400-515 nm, which does not contain the grid "
                                             r"400-2500 nm .* e.g. --grid 400:510:10"):
        ingest([_src(path)], tmp_path / "lib.zarr")
    with pytest.raises(UserInputError, match="grid 'a:b': expected START:STOP:STEP"):
        ingest([_src(path)], tmp_path / "lib.zarr", grid="a:b")
    with pytest.raises(UserInputError, match="UL.120: spectra cover 420-2500 nm.*--grid 420:2500:10"):
        ingest(["UL.120"], tmp_path / "lib.zarr")
    assert _listing(tmp_path) == ["bad.csv"]


def test_existing_store_is_not_replaced_without_overwrite(tmp_path):
    frame, _ = _table()
    path = _csv(tmp_path, frame)
    ingest([_src(path)], tmp_path / "lib.zarr", grid=GRID)
    with pytest.raises(UserInputError, match="already exists"):
        ingest([_src(path)], tmp_path / "lib.zarr", grid=GRID)
    with pytest.raises(UserInputError, match="either --append or --overwrite"):
        ingest([_src(path)], tmp_path / "lib.zarr", append=True, overwrite=True)
    with pytest.raises(UserInputError, match="no such file or folder, and not a LimeSoDa site id"):
        ingest(["nowhere.csv"], tmp_path / "x.zarr")
    assert SpectralLibrary.open(tmp_path / "lib.zarr").n_samples == 12
