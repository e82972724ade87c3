"""The Zarr spectral library store: create/open/append/subset/by/split/save/set_meta/ref, the dask array, atomicity,
truncated or foreign stores, grid mismatch and duplicate ids (issue 2, item 3)."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import zarr

from dtl_dist.errors import UserInputError
from dtl_dist.library import LOCAL_LABELLED, LOCAL_TEST, LibraryWriter, SpectralLibrary, check_compatible, describe

WL = np.arange(400.0, 460.0, 10.0)  # 6 bands


def _arrays(n=7, seed=0, prefix="s"):
    rng = np.random.default_rng(seed)
    return {
        "spectra": rng.random((n, WL.size), dtype=np.float32),
        "sample_id": np.array([f"{prefix}{i}" for i in range(n)]),
        "targets": {"soc": rng.uniform(0.1, 5.0, n)},
        "meta": {"country": np.array(["SE", "AU", "SE", "CH", "AU", "SE", "BR"][:n]),
                 "lat": rng.uniform(-40, 60, n)},
    }


def _create(path, n=7, seed=0, **kwargs):
    a = _arrays(n, seed)
    return SpectralLibrary.create(path, a["spectra"], WL, a["sample_id"], targets=a["targets"], meta=a["meta"],
                                  preprocessing=["log10(1/R)"], provenance=[{"source": "test"}], chunk_rows=3,
                                  **kwargs), a


def _snapshot(path):
    """Every file under a store with its bytes: equal snapshots = the store is unchanged."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _siblings(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


def test_create_open_roundtrip(tmp_path):
    lib, a = _create(tmp_path / "lib.zarr")
    again = SpectralLibrary.open(tmp_path / "lib.zarr")
    assert again.n_samples == len(again) == 7 and again.n_bands == WL.size
    np.testing.assert_array_equal(again.spectra(), a["spectra"])
    assert again.spectra().dtype == np.float32
    np.testing.assert_array_equal(again.wavelengths, WL)
    np.testing.assert_array_equal(again.sample_id, a["sample_id"])
    np.testing.assert_allclose(again.target("soc"), a["targets"]["soc"])
    np.testing.assert_array_equal(again.meta("country"), a["meta"]["country"])
    np.testing.assert_allclose(again.meta("lat"), a["meta"]["lat"])
    assert again.units == "absorbance" and again.preprocessing == ["log10(1/R)"]
    assert again.provenance == [{"source": "test"}]
    assert again.targets == ["soc"] and again.meta_fields == ["country", "lat"]
    assert zarr.open_group(str(tmp_path / "lib.zarr"), mode="r")["spectra"].chunks == (3, WL.size)
    info = describe(again)
    assert info["n_samples"] == 7 and info["wavelengths_nm"] == [400.0, 450.0] and json.dumps(info)
    with pytest.raises(UserInputError, match="no target 'clay'"):
        again.target("clay")


def test_create_refuses_existing_and_bad_shapes(tmp_path):
    _create(tmp_path / "lib.zarr")
    with pytest.raises(UserInputError, match="already exists"):
        _create(tmp_path / "lib.zarr")
    with pytest.raises(UserInputError, match=r"expected shape \(N, 6\)"):
        SpectralLibrary.create(tmp_path / "bad.zarr", np.zeros((3, 5)), WL, ["a", "b", "c"])
    with pytest.raises(UserInputError, match="duplicated wavelength 410"):
        SpectralLibrary.create(tmp_path / "bad.zarr", np.zeros((1, 3)), [400, 410, 410], ["a"])
    assert _siblings(tmp_path) == ["lib.zarr"]


def test_duplicate_ids_on_create_write_nothing(tmp_path):
    a = _arrays()
    ids = a["sample_id"].copy()
    ids[4] = ids[1]
    with pytest.raises(UserInputError, match="duplicate sample_id s1"):
        SpectralLibrary.create(tmp_path / "lib.zarr", a["spectra"], WL, ids)
    assert _siblings(tmp_path) == []


def test_failed_overwrite_leaves_existing_store_unchanged(tmp_path):
    path = tmp_path / "lib.zarr"
    _create(path)
    before = _snapshot(path)
    a = _arrays()
    with pytest.raises(UserInputError, match="meta/country: expected 7 values"):
        SpectralLibrary.create(path, a["spectra"], WL, a["sample_id"], meta={"country": ["SE"] * 6},
                               overwrite=True)
    assert _snapshot(path) == before and _siblings(tmp_path) == ["lib.zarr"]
    _create(path, seed=1, overwrite=True)
    assert _snapshot(path) != before


def test_library_writer_streams_and_aborts(tmp_path):
    a = _arrays(7)
    with LibraryWriter(tmp_path / "lib.zarr", WL, targets=["soc"], meta_text=["country"], chunk_rows=2) as w:
        for start in range(0, 7, 3):
            rows = slice(start, start + 3)
            w.append_rows(a["spectra"][rows], a["sample_id"][rows],
                          {"targets/soc": a["targets"]["soc"][rows], "meta/country": a["meta"]["country"][rows]})
        assert _siblings(tmp_path)[0].startswith(".lib.zarr.tmp-")
        lib = w.commit()
    np.testing.assert_array_equal(lib.spectra(), a["spectra"])
    np.testing.assert_array_equal(lib.meta("country"), a["meta"]["country"])
    with pytest.raises(RuntimeError, match="failure half way"), LibraryWriter(tmp_path / "other.zarr", WL) as w:
        w.append_rows(a["spectra"][:2], ["x", "y"], {})
        raise RuntimeError("failure half way")
    assert _siblings(tmp_path) == ["lib.zarr"]


def test_append_in_place(tmp_path):
    lib, a = _create(tmp_path / "lib.zarr")
    b = _arrays(4, seed=5, prefix="t")
    lib.append(b["spectra"], WL, b["sample_id"], targets={"soc": b["targets"]["soc"]},
               meta={"country": b["meta"]["country"]}, provenance={"source": "more"})
    again = SpectralLibrary.open(tmp_path / "lib.zarr")
    assert again.n_samples == 11
    np.testing.assert_array_equal(again.spectra(), np.vstack([a["spectra"], b["spectra"]]))
    np.testing.assert_array_equal(again.sample_id[7:], b["sample_id"])
    np.testing.assert_allclose(again.target("soc")[7:], b["targets"]["soc"])
    assert np.isnan(again.meta("lat")[7:]).all()  # a field not given is NaN (numeric) ...
    np.testing.assert_array_equal(again.meta("country")[7:], b["meta"]["country"])
    assert again.provenance == [{"source": "test"}, {"source": "more"}]


@pytest.mark.parametrize("wavelengths, match", [
    (np.arange(400.0, 450.0, 10.0), "5 bands 400-440 nm"),           # band count
    (np.arange(405.0, 465.0, 10.0), "6 bands 405-455 nm"),           # same count, other grid
])
def test_append_grid_mismatch_leaves_store_unchanged(tmp_path, wavelengths, match):
    lib, _ = _create(tmp_path / "lib.zarr")
    before = _snapshot(tmp_path / "lib.zarr")
    with pytest.raises(UserInputError, match=f"grid mismatch on append.*{match}"):
        lib.append(np.zeros((2, wavelengths.size)), wavelengths, ["n1", "n2"])
    assert _snapshot(tmp_path / "lib.zarr") == before


def test_append_duplicate_ids_and_unknown_columns_leave_store_unchanged(tmp_path):
    lib, a = _create(tmp_path / "lib.zarr")
    before = _snapshot(tmp_path / "lib.zarr")
    with pytest.raises(UserInputError, match="duplicate sample_id s3"):
        lib.append(np.zeros((2, WL.size)), WL, ["new", "s3"])
    with pytest.raises(UserInputError, match="columns the store lacks"):
        lib.append(np.zeros((1, WL.size)), WL, ["new"], meta={"depth": [10.0]})
    with pytest.raises(UserInputError, match="cannot append to a view"):
        lib.by(country="SE").append(np.zeros((1, WL.size)), WL, ["new"])
    assert _snapshot(tmp_path / "lib.zarr") == before
    assert SpectralLibrary.open(tmp_path / "lib.zarr").n_samples == 7


def test_append_library_and_rollback(tmp_path):
    lib, a = _create(tmp_path / "lib.zarr")
    other, b = _create(tmp_path / "other.zarr", n=5, seed=3)
    with pytest.raises(UserInputError, match="duplicate sample_id"):
        lib.append_library(other)
    renamed = SpectralLibrary.create(tmp_path / "renamed.zarr", b["spectra"], WL, [f"r{i}" for i in range(5)],
                                     targets=b["targets"], meta=b["meta"], preprocessing=["log10(1/R)"],
                                     provenance=[{"source": "renamed"}])
    lib.append_library(renamed, chunk_rows=2)
    assert lib.n_samples == 12
    np.testing.assert_array_equal(lib.spectra(rows=slice(7, None)), b["spectra"])
    np.testing.assert_array_equal(lib.meta("country")[7:], b["meta"]["country"])
    assert lib.provenance[-1] == {"source": "renamed"}
    # a failure after the arrays grew (text into a numeric column) shrinks them back
    text_lat = SpectralLibrary.create(tmp_path / "text.zarr", b["spectra"][:2], WL, ["q1", "q2"],
                                      meta={"lat": np.array(["north", "south"])}, preprocessing=["log10(1/R)"])
    before = _snapshot(tmp_path / "lib.zarr")
    with pytest.raises(UserInputError, match="meta/lat is text"):
        lib.append_library(text_lat)
    again = SpectralLibrary.open(tmp_path / "lib.zarr")
    assert again.n_samples == 12
    np.testing.assert_array_equal(again.spectra(), lib.spectra())
    assert json.loads(before["zarr.json"]) == json.loads(_snapshot(tmp_path / "lib.zarr")["zarr.json"])


def test_subset_by_and_views(tmp_path):
    lib, a = _create(tmp_path / "lib.zarr")
    se = lib.by(country="SE")
    np.testing.assert_array_equal(se.sample_id, ["s0", "s2", "s5"])
    np.testing.assert_array_equal(se.spectra(), a["spectra"][[0, 2, 5]])
    np.testing.assert_allclose(se.target("soc"), a["targets"]["soc"][[0, 2, 5]])
    two = lib.by(country=["SE", "AU"])
    assert two.n_samples == 5 and "view of 5 rows" in repr(two)
    np.testing.assert_array_equal(lib.subset(ids=["s6", "s1"]).spectra(), a["spectra"][[6, 1]])
    mask = a["targets"]["soc"] > 2.5
    np.testing.assert_array_equal(lib.subset(mask=mask).sample_id, a["sample_id"][mask])
    nested = se.subset(index=[2, 0])  # rows relative to the view
    np.testing.assert_array_equal(nested.sample_id, ["s5", "s0"])
    np.testing.assert_array_equal(nested.spectra(rows=[1]), a["spectra"][[0]])
    with pytest.raises(UserInputError, match="no samples with"):
        lib.by(country="JP")
    with pytest.raises(UserInputError, match="unknown sample_id nope"):
        lib.subset(ids=["nope"])
    with pytest.raises(UserInputError, match="expected 7 booleans"):
        lib.subset(mask=[True, False])


def test_dask_array_and_ref(tmp_path):
    from dtl_dist.engines.dask import library_array

    lib, a = _create(tmp_path / "lib.zarr")
    d = library_array(lib)
    assert d.chunks[0] == (3, 3, 1)
    np.testing.assert_array_equal(d.compute(), a["spectra"])
    view = lib.by(country="AU")
    np.testing.assert_array_equal(library_array(view).compute(), a["spectra"][[1, 4]])
    ref = pickle.loads(pickle.dumps(view.ref()))
    np.testing.assert_array_equal(ref.open().sample_id, ["s1", "s4"])
    np.testing.assert_array_equal(ref.spectra(), a["spectra"][[1, 4]])
    np.testing.assert_array_equal(lib.ref().spectra(), a["spectra"])


def test_set_meta_and_split(tmp_path):
    lib, a = _create(tmp_path / "lib.zarr")
    with pytest.raises(UserInputError, match="select-local"):
        lib.split()
    role = np.array([LOCAL_LABELLED, LOCAL_TEST, LOCAL_TEST, LOCAL_LABELLED, LOCAL_TEST, LOCAL_TEST, LOCAL_TEST])
    lib.set_meta("role", role)
    labelled, test = SpectralLibrary.open(tmp_path / "lib.zarr").split()
    np.testing.assert_array_equal(labelled.sample_id, ["s0", "s3"])
    np.testing.assert_array_equal(test.spectra(), a["spectra"][[1, 2, 4, 5, 6]])
    lib.set_meta("role", np.where(role == LOCAL_TEST, LOCAL_LABELLED, LOCAL_TEST))  # replace
    assert lib.split()[0].n_samples == 5
    with pytest.raises(UserInputError, match="expected 7 values"):
        lib.set_meta("role", role[:3])
    with pytest.raises(UserInputError, match="cannot set metadata on a view"):
        lib.by(country="SE").set_meta("role", ["x"] * 3)
    assert not any(p.name.startswith(".") for p in (tmp_path / "lib.zarr" / "meta").iterdir())


def test_save_view_plus_extra_and_compatibility(tmp_path):
    lib, a = _create(tmp_path / "lib.zarr")
    site = SpectralLibrary.create(tmp_path / "site.zarr", a["spectra"][:2] + 1, WL, ["x1", "x2"],
                                  targets={"soc": [1.0, 2.0]}, preprocessing=["log10(1/R)"])
    localised = lib.by(country="SE").save(tmp_path / "localised.zarr", extra=site)
    assert localised.n_samples == 5
    np.testing.assert_array_equal(localised.sample_id, ["s0", "s2", "s5", "x1", "x2"])
    np.testing.assert_array_equal(localised.spectra()[3:], a["spectra"][:2] + 1)
    np.testing.assert_allclose(localised.target("soc")[3:], [1.0, 2.0])
    assert np.isnan(localised.meta("lat")[3:]).all() and list(localised.meta("country")[3:]) == ["", ""]
    assert localised.provenance[-1]["derived_from"] == [str(tmp_path / "lib.zarr"), str(tmp_path / "site.zarr")]
    other_grid = SpectralLibrary.create(tmp_path / "g.zarr", np.zeros((1, 3)), [400, 500, 600], ["g"],
                                        preprocessing=["log10(1/R)"])
    with pytest.raises(UserInputError, match="wavelength grid .*3 bands, 400-600 nm"):
        check_compatible(lib, other_grid)
    raw = SpectralLibrary.create(tmp_path / "raw.zarr", np.zeros((1, WL.size)), WL, ["r"], units="absorbance")
    with pytest.raises(UserInputError, match="units/preprocessing"):
        lib.save(tmp_path / "mixed.zarr", extra=raw)
    assert not (tmp_path / "mixed.zarr").exists()


def test_missing_foreign_and_truncated_stores(tmp_path):
    with pytest.raises(UserInputError, match="no such spectral library store"):
        SpectralLibrary.open(tmp_path / "absent.zarr")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("not zarr")
    with pytest.raises(UserInputError, match="plain: not a readable Zarr store"):
        SpectralLibrary.open(tmp_path / "plain")
    foreign = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w", zarr_format=3)
    foreign.create_array("x", data=np.arange(3))
    with pytest.raises(UserInputError, match="not a dtl-dist spectral library"):
        SpectralLibrary.open(tmp_path / "foreign.zarr")
    _create(tmp_path / "lib.zarr")
    broken = tmp_path / "broken.zarr"
    shutil.copytree(tmp_path / "lib.zarr", broken)
    shutil.rmtree(broken / "sample_id")
    with pytest.raises(UserInputError, match="truncated store, missing array"):
        SpectralLibrary.open(broken)
    (tmp_path / "bad_json.zarr").mkdir()
    (tmp_path / "bad_json.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gro')
    with pytest.raises(UserInputError, match="not a readable Zarr store"):
        SpectralLibrary.open(tmp_path / "bad_json.zarr")
    short = tmp_path / "short.zarr"
    shutil.copytree(tmp_path / "lib.zarr", short)
    zarr.open_group(str(short), mode="r+")["targets/soc"].resize((5,))
    with pytest.raises(UserInputError, match="array targets/soc has 5 rows, spectra has 7"):
        SpectralLibrary.open(short)
