"""OSSL v1.2 ingestion (issue 18, item 1): the all-table or the joined vis-NIR, soil-lab and site tables, streamed,
rows without vis-NIR or OC skipped and counted, --where filters, bad input refused with one line and exit 2.

The reference for every value is pandas reading the whole fixture and numpy's ``interp`` of ``log10(1/R)``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from dtl_dist.cli import app
from dtl_dist.library import SpectralLibrary
from dtl_dist.library import ossl
from dtl_dist.library.ingest import ingest, ossl_source
from dtl_dist.library.ossl_synthetic import write_ossl

GRID = "400:2500:10"
GRID_WL = np.arange(400.0, 2501.0, 10.0)
N = 200


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("ossl")
    return {"all": write_ossl(root / "all", N, seed=3, block_rows=120),
            "split": write_ossl(root / "split", N, seed=3, layout="tables", gz=False, block_rows=120)}


def _reference(path, where=None, low=400):
    """Independent reference: the whole all-table in pandas, rows filtered by hand, np.interp per row."""
    frame = pd.read_csv(path, dtype={ossl.ID: str})
    columns = [f"scan_visnir.{w}_ref" for w in range(low, 2501, 2)]
    keep = np.ones(len(frame), bool) if where is None else frame[ossl.DATASET].isin(where).to_numpy().copy()
    n_where = int((~keep).sum())
    visnir = frame[columns].notna().all(axis=1).to_numpy()
    n_visnir = int((keep & ~visnir).sum())
    keep &= visnir
    n_oc = int((keep & frame[ossl.OC].isna()).sum())
    keep &= frame[ossl.OC].notna().to_numpy()
    rows = frame[keep]
    wl = np.arange(low, 2501, 2.0)
    absorbance = np.array([np.interp(GRID_WL, wl, np.log10(1 / r)) for r in rows[columns].to_numpy()])
    counts = {"rows": len(frame), "no_visnir": n_visnir, "no_oc": n_oc, "where": n_where}
    return rows, absorbance, counts


def test_all_table_gz_matches_pandas_reference(tables, tmp_path):
    path = tables["all"][0]
    lib = ingest([ossl_source([path])], tmp_path / "o.zarr", grid=GRID, block_rows=64)
    rows, absorbance, counts = _reference(path)
    assert 0 < counts["no_visnir"] and 0 < counts["no_oc"]  # the fixture has both kinds of skipped rows
    np.testing.assert_array_equal(lib.sample_id, rows[ossl.ID].to_numpy())
    np.testing.assert_allclose(lib.spectra(), absorbance, rtol=0, atol=2e-6)
    np.testing.assert_allclose(lib.target("soc"), rows[ossl.OC].to_numpy())
    np.testing.assert_array_equal(lib.meta("country"), rows[ossl.COUNTRY].to_numpy())
    np.testing.assert_array_equal(lib.meta("source"), rows[ossl.DATASET].to_numpy())
    np.testing.assert_allclose(lib.meta("lon"), rows[ossl.LON].to_numpy())
    np.testing.assert_allclose(lib.meta("lat"), rows[ossl.LAT].to_numpy())
    assert lib.provenance[-1]["skipped"] == counts
    assert lib.provenance[-1]["units"] == "reflectance_fraction"
    usa = lib.by(country="USA")  # ISO-3 kept as given: the study's --country USA selects these rows
    assert usa.n_samples == int((rows[ossl.COUNTRY] == "USA").sum()) > 0


def test_split_tables_join_on_layer_id_like_the_all_table(tables, tmp_path):
    joined = ingest([ossl_source(tables["split"])], tmp_path / "s.zarr", grid=GRID)
    whole = ingest([ossl_source(tables["all"])], tmp_path / "a.zarr", grid=GRID, block_rows=1000)
    assert pd.read_csv(tables["split"][1])[ossl.ID].iloc[0] != pd.read_csv(tables["split"][0])[ossl.ID].iloc[0]
    np.testing.assert_array_equal(joined.sample_id, whole.sample_id)
    np.testing.assert_array_equal(joined.spectra(), whole.spectra())
    for name in ("country", "source", "lat", "lon"):
        np.testing.assert_array_equal(joined.meta(name), whole.meta(name))
    np.testing.assert_array_equal(joined.target("soc"), whole.target("soc"))


def test_where_filter_and_summary_line(tables, tmp_path):
    path = tables["all"][0]
    result = CliRunner().invoke(app, ["ingest", "--format", "ossl", str(path), "--out", str(tmp_path / "w.zarr"),
                                      "--where", "dataset=LUCAS.SSL,KSSL.SSL", "-q"])
    assert result.exit_code == 0, result.output
    rows, _, counts = _reference(path, where={"LUCAS.SSL", "KSSL.SSL"})
    lib = SpectralLibrary.open(tmp_path / "w.zarr")
    assert set(lib.meta("source")) == {"LUCAS.SSL", "KSSL.SSL"}
    np.testing.assert_array_equal(lib.sample_id, rows[ossl.ID].to_numpy())
    assert (f"read {N} rows, skipped {counts['no_visnir']} without vis-NIR, {counts['no_oc']} without SOC, "
            f"{counts['where']} by --where") in result.output


def test_percent_columns_and_a_library_measured_from_400_nm(tables, tmp_path):
    frame = pd.read_csv(tables["split"][0], dtype={ossl.ID: str})
    spectral = [c for c in frame.columns if c.startswith("scan_visnir.")]
    frame.loc[::4, [f"scan_visnir.{w}_ref" for w in range(350, 400, 2)]] = np.nan  # LUCAS: no values below 400
    reference = tmp_path / "ref.csv"
    frame.to_csv(reference, index=False)
    percent = frame.rename(columns={c: c.replace("_ref", "_pcnt") for c in spectral})
    percent[[c.replace("_ref", "_pcnt") for c in spectral]] *= 100
    percent.to_csv(tmp_path / "pcnt.csv", index=False)
    a = ingest([ossl_source([reference, *tables["split"][1:]])], tmp_path / "a.zarr", grid=GRID)
    b = ingest([ossl_source([tmp_path / "pcnt.csv", *tables["split"][1:]])], tmp_path / "b.zarr", grid=GRID)
    assert b.provenance[-1]["units"] == "reflectance_percent"
    np.testing.assert_array_equal(a.sample_id, b.sample_id)
    np.testing.assert_allclose(a.spectra(), b.spectra(), atol=1e-5)
    assert a.provenance[-1]["skipped"]["no_visnir"] == _reference(tables["all"][0])[2]["no_visnir"]
    low = ingest([ossl_source([reference, *tables["split"][1:]])], tmp_path / "c.zarr", grid="350:2500:10")
    assert low.n_samples < a.n_samples  # on a 350 nm grid the rows without 350-398 nm are skipped


@pytest.mark.parametrize("case, match", [
    ("visnir_only", "missing OSSL column 'oc_usda.c729_w.pct'"),
    ("no_equals", "--where 'dataset': expected FIELD=VALUE"),
    ("unknown_field", "--where: no column 'depth'"),
    ("text_cell", "column 'scan_visnir.1000_ref': 'abc' is not a number"),
    ("declared_units", "drop --units"),
    ("missing_id", "missing id column 'id.layer_uuid_txt'"),
])
def test_bad_input_one_line_exit_2_nothing_written(tables, tmp_path, case, match):
    split = [str(p) for p in tables["split"]]
    args = {"visnir_only": split[:1], "no_equals": split + ["--where", "dataset"],
            "unknown_field": split + ["--where", "depth=0"], "declared_units": split + ["--units", "absorbance"]}
    if case == "text_cell":
        frame = pd.read_csv(split[0], dtype=str)
        frame.loc[7, "scan_visnir.1000_ref"] = "abc"
        frame.to_csv(tmp_path / "bad.csv", index=False)
        args[case] = [str(tmp_path / "bad.csv"), *split[1:]]
    if case == "missing_id":
        pd.read_csv(split[0]).drop(columns=[ossl.ID]).to_csv(tmp_path / "noid.csv", index=False)
        args[case] = [str(tmp_path / "noid.csv"), *split[1:]]
    out = tmp_path / "out.zarr"
    result = CliRunner().invoke(app, ["ingest", "--format", "ossl", *args[case], "--out", str(out), "-q"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and match in lines[0], result.output
    if case == "text_cell":
        assert "row 8" in lines[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".zarr") == []
