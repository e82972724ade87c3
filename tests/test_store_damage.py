"""Stores are verified, not trusted (issue 17, item 1): a missing, truncated or altered chunk of any array of a
library or site store is found on every read path and reported in one line naming the store, the array and the
chunk, exit 2, nothing written; `dtl info --verify` decodes every chunk; a store written before still opens,
with a note."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dtl_dist.cli import app
from dtl_dist.library import SpectralLibrary
from dtl_dist.library.integrity import StoreDamaged

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _damaged(result, store, array, chunk):
    """Exit 2 and one line on stderr naming the store, the array and the chunk; no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith(f"error: {store}: array {array}, chunk {chunk}: "), lines[0]


def remove(path: Path) -> None:
    path.unlink()


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def alter(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _snapshot(folder: Path) -> dict:
    """Every file under ``folder`` and its SHA-256, to show that nothing was written."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A synthetic library (600 rows in chunks of 100) and a site (60 rows, one chunk) split 10 / 50."""
    from dtl_dist.library.synthetic import write_library, write_site
    from dtl_dist.spectra.grid import make_grid
    from dtl_dist.study.select_local import select_local

    folder = tmp_path_factory.mktemp("clean")
    grid = make_grid(400, 2500, 20)
    write_library(folder / "lib.zarr", 600, seed=5, wavelengths=grid, chunk_rows=100)
    write_site(folder / "site.zarr", 60, seed=6, wavelengths=grid)
    select_local(folder / "site.zarr", 10)
    return folder


@pytest.fixture
def stores(clean, tmp_path):
    """A fresh copy of the clean stores to damage."""
    shutil.copytree(clean, tmp_path / "data")
    return tmp_path / "data"


@pytest.mark.parametrize("array, chunk, damage", [
    ("spectra", "c/0/0", remove), ("spectra", "c/2/0", truncate), ("spectra", "c/5/0", alter),
    ("sample_id", "c/3", alter), ("targets/soc", "c/1", remove), ("meta/country", "c/4", truncate),
    ("wavelengths", "c/0", alter),
])
def test_every_array_and_damage_is_found_by_info_verify(stores, array, chunk, damage):
    lib = stores / "lib.zarr"
    damage(lib / array / chunk)
    _damaged(_run("info", lib, "--verify"), lib, array, chunk)
    with pytest.raises(StoreDamaged, match=f"array {array}, chunk {chunk}: "):
        SpectralLibrary.open(lib).check_chunks(decode_from=0)


def test_info_finds_a_missing_spectra_chunk_and_verify_an_altered_one(stores):
    site = stores / "site.zarr"
    assert _run("info", site).exit_code == 0
    result = _run("info", site, "--verify")
    assert result.exit_code == 0 and "chunks decoded, checksums match" in " ".join(result.stdout.split())
    alter(site / "spectra" / "c" / "0" / "0")
    assert _run("info", site).exit_code == 0  # info reads targets and meta only; --verify reads everything
    _damaged(_run("info", site, "--verify"), site, "spectra", "c/0/0")
    remove(site / "spectra" / "c" / "0" / "0")
    _damaged(_run("info", site), site, "spectra", "c/0/0")


@pytest.mark.parametrize("damage", [remove, truncate, alter])
def test_select_local_refuses_a_damaged_site_and_writes_nothing(stores, damage):
    site = stores / "site.zarr"
    damage(site / "spectra" / "c" / "0" / "0")
    before = _snapshot(stores)
    _damaged(_run("select-local", site, "--n", "10"), site, "spectra", "c/0/0")
    assert _snapshot(stores) == before


@pytest.mark.parametrize("engine, array, chunk, damage", [
    ("in-process", "spectra", "c/3/0", alter), ("in-process", "targets/soc", "c/2", remove),
    ("dask", "spectra", "c/4/0", truncate),
])
def test_rslocal_refuses_a_damaged_library_and_writes_nothing(stores, request, engine, array, chunk, damage):
    lib, out = stores / "lib.zarr", stores.parent / "rs"
    damage(lib / array / chunk)
    where = ["--workers", 0]
    if engine == "dask":  # the shard readers run in the Dask worker processes
        where = ["--address", request.getfixturevalue("dask_client").scheduler.address]
    result = _run("rslocal", "--library", lib, "--site", stores / "site.zarr", "--out", out, "--k", 50,
                  "--subset", 40, "--b", 4, "--ncomp", 3, "--shard-rows", 256, *where)
    _damaged(result, lib, array, chunk)
    assert not out.exists()


def _csv(path: Path, wavelengths, n: int, seed: int) -> Path:
    rows = np.random.default_rng(seed).uniform(0.2, 0.6, (n, wavelengths.size))
    lines = [",".join(["soc"] + [f"{w:g}" for w in wavelengths])]
    lines += [",".join(["1.5"] + [f"{v:.4f}" for v in r]) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ingest_append_refuses_a_damaged_store_and_leaves_it_unchanged(tmp_path):
    lib, grid = tmp_path / "lib.zarr", np.arange(400.0, 2501.0, 20.0)
    ingest = ["--units", "reflectance_fraction", "--target", "soc", "--grid", "400:2500:20", "-q"]
    assert _run("ingest", _csv(tmp_path / "a.csv", grid, 5, 0), *ingest, "--out", lib).exit_code == 0
    truncate(lib / "spectra" / "c" / "0" / "0")  # the tail chunk an append rewrites
    more = _csv(tmp_path / "b.csv", grid, 3, 1)
    before = _snapshot(tmp_path)
    result = _run("ingest", more, *ingest, "--append", "--out", lib)
    _damaged(result, lib, "spectra", "c/0/0")
    assert _snapshot(tmp_path) == before


def test_study_refuses_a_damaged_library_before_writing(stores):
    lib, out = stores / "lib.zarr", stores.parent / "run"
    remove(lib / "meta" / "country" / "c" / "0")
    result = _run("study", "--library", lib, "--site", stores / "site.zarr", "--out", out, "--workers", 0)
    _damaged(result, lib, "meta/country", "c/0")
    assert not out.exists()


def test_a_damaged_chunk_in_a_worker_names_the_chunk(stores):
    """The shard readers of RS-LOCAL read through a LibraryRef, as Dask workers do."""
    lib = SpectralLibrary.open(stores / "lib.zarr")
    alter(stores / "lib.zarr" / "spectra" / "c" / "1" / "0")
    ref = lib.ref()
    assert ref.spectra(slice(0, 100)).shape == (100, lib.n_bands)  # chunk 0 is fine
    with pytest.raises(StoreDamaged, match="array spectra, chunk c/1/0: unreadable"):
        ref.spectra(np.array([5, 150]))


def _read_rows(rows, ref):
    return ref.spectra(np.asarray(rows))


def test_a_damaged_chunk_read_in_a_ray_task_is_the_same_one_line(stores, ray_session):
    """The study's Ray tasks read stores by path too; the task's user error reaches the CLI as its one line."""
    import sys

    from ray import cloudpickle as ray_cloudpickle

    from dtl_dist.engines.ray import map_blocks

    ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    ref = SpectralLibrary.open(stores / "lib.zarr").ref()
    truncate(stores / "lib.zarr" / "spectra" / "c" / "2" / "0")
    ray_map = map_blocks(retries=0)
    assert [b.shape for b in ray_map(_read_rows, [[0, 1], [150]], shared=(ref,))] == [(2, 106), (1, 106)]
    with pytest.raises(StoreDamaged) as caught:
        ray_map(_read_rows, [[0], [250]], shared=(ref,))
    assert str(caught.value).startswith(f"{ref.path}: array spectra, chunk c/2/0: unreadable")
    assert "\n" not in str(caught.value)


def test_a_store_without_integrity_record_opens_with_a_note(stores):
    """A store written before this version (no ``integrity`` attribute, no checksums) still opens."""
    site = stores / "site.zarr"
    meta = json.loads((site / "zarr.json").read_text())
    del meta["attributes"]["integrity"]
    (site / "zarr.json").write_text(json.dumps(meta))
    result = _run("info", site)
    assert result.exit_code == 0, result.output
    assert "note: " in result.stderr and "written before stores were verified" in result.stderr
    assert "not verified" in " ".join(result.stdout.split())
    remove(site / "targets" / "soc" / "c" / "0")  # an old store cannot tell this from unmeasured samples
    assert _run("info", site).exit_code == 0
