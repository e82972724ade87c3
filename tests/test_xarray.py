"""Stores open in xarray (issue 18, item 2): named dimensions, wavelength and sample_id coordinates, targets and
metadata on the sample dimension, the store's attributes; stores written before keep opening and upgrade in place."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
import zarr
from typer.testing import CliRunner

from dtl_dist.cli import app
from dtl_dist.library import SpectralLibrary
from dtl_dist.library.xarray_layout import open_dataset

WL = np.array([400.0, 410.0, 420.0, 430.0])


def _library(path, n=7):
    rng = np.random.default_rng(0)
    return SpectralLibrary.create(
        path, rng.uniform(0.1, 1.5, (n, WL.size)), WL, [f"s{i}" for i in range(n)],
        targets={"soc": rng.uniform(0.5, 5, n)}, meta={"country": np.array(["USA", "SWE"] * 3 + ["USA"]),
                                                       "lat": rng.uniform(-30, 60, n)},
        units="absorbance", preprocessing=["log10(1/R)"], target_units={"soc": "%"}, chunk_rows=3)


def test_open_zarr_gives_named_dimensions_coordinates_and_attributes(tmp_path):
    lib = _library(tmp_path / "lib.zarr")
    ds = xr.open_zarr(tmp_path / "lib.zarr", consolidated=False)
    assert ds.spectra.dims == ("sample", "wavelength")
    np.testing.assert_array_equal(ds.spectra.values, lib.spectra())
    np.testing.assert_array_equal(ds.wavelength.values, WL)
    assert "wavelength" in ds.indexes and ds.wavelength.attrs["units"] == "nm"
    np.testing.assert_array_equal(ds.sample_id.values.astype(object).astype(str), lib.sample_id)
    assert "sample_id" in ds.coords
    assert ds.attrs["units"] == "absorbance" and ds.attrs["schema"] == lib.attrs["schema"]
    np.testing.assert_array_equal(ds.spectra.sel(wavelength=410.0).values, lib.spectra()[:, 1])
    targets = xr.open_zarr(tmp_path / "lib.zarr", group="targets", consolidated=False)
    np.testing.assert_array_equal(targets.soc.values, lib.target("soc"))
    assert targets.soc.dims == ("sample",)
    whole = open_dataset(tmp_path / "lib.zarr")
    np.testing.assert_array_equal(whole.soc.values, lib.target("soc"))
    np.testing.assert_array_equal(whole.country.values.astype(object).astype(str), lib.meta("country"))
    np.testing.assert_array_equal(whole.lat.values, lib.meta("lat"))
    usa = whole.spectra.where((whole.country == "USA").compute(), drop=True)
    np.testing.assert_array_equal(usa.values, lib.by(country="USA").spectra())


def test_appended_and_split_stores_stay_named(tmp_path):
    lib = _library(tmp_path / "a.zarr")
    lib.append_library(_library(tmp_path / "b.zarr", n=7).subset(index=np.arange(0)))  # no rows, still valid
    lib.append(np.ones((2, WL.size)), WL, ["x1", "x2"], targets={"soc": np.array([1.0, 2.0])})
    lib.set_meta("role", np.array(["local_labelled"] * 9))
    whole = open_dataset(tmp_path / "a.zarr")
    assert whole.sizes == {"sample": 9, "wavelength": WL.size}
    np.testing.assert_array_equal(whole.role.values.astype(object).astype(str), ["local_labelled"] * 9)


def _strip_to_old_layout(path):
    """A store as dtl wrote it before dimensions were named: no dimension_names, no wavelength coordinate."""
    for meta_path in path.rglob("zarr.json"):
        meta = json.loads(meta_path.read_text())
        if meta.get("node_type") == "array":
            meta["dimension_names"] = None
            meta.get("attributes", {}).pop("coordinates", None)
            meta_path.write_text(json.dumps(meta))
    import shutil

    shutil.rmtree(path / "wavelength")


def test_old_store_opens_in_dtl_and_upgrades_in_place(tmp_path):
    path = tmp_path / "old.zarr"
    lib = _library(path)
    spectra, soc = lib.spectra(), lib.target("soc")
    _strip_to_old_layout(path)
    old = SpectralLibrary.open(path)  # dtl reads it as before
    np.testing.assert_array_equal(old.spectra(), spectra)
    assert "wavelength" not in zarr.open_group(str(path), mode="r")
    with pytest.raises(KeyError, match="dimension_names"):  # what xarray says of a store written before
        xr.open_zarr(path, consolidated=False)
    result = CliRunner().invoke(app, ["info", str(path), "--upgrade", "--json"])
    assert result.exit_code == 0, result.output
    assert "named dimensions of wavelength" in result.output
    ds = open_dataset(path)
    assert ds.spectra.dims == ("sample", "wavelength")
    np.testing.assert_array_equal(ds.spectra.values, spectra)
    np.testing.assert_array_equal(ds.soc.values, soc)
    again = CliRunner().invoke(app, ["info", str(path), "--upgrade", "--json"])
    assert "already up to date" in again.output
    bad = CliRunner().invoke(app, ["info", str(tmp_path / "nothing.zarr"), "--upgrade"])
    assert bad.exit_code == 2 and not (tmp_path / "nothing.zarr").exists()
