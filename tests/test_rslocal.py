"""RS-LOCAL-v2.0 (paper section 2.3.2): keyed draws, shards and merges, the distributed drop against a brute-force
reference, the first iteration against scikit-learn, exactly k selected, the same selection for any threads and
from a checkpoint, the ``dtl rslocal`` stage (outputs, resume) and its bad-input errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.cross_decomposition import PLSRegression
from typer.testing import CliRunner

from conftest import limesoda_site
from dtl_dist.cli import app
from dtl_dist.library import SpectralLibrary
from dtl_dist.library.synthetic import write_library, write_site
from dtl_dist.select import kennard_stone, shards
from dtl_dist.select.rslocal import LocalShards, rslocal
from dtl_dist.select.shards import (
    bracket,
    count_at_or_above,
    find_cut,
    plan_merges,
    round_subsets,
    shard_plan,
    sketch,
    subset_size,
    tie_keys,
)
from dtl_dist.spectra.grid import make_grid, resample
from dtl_dist.spectra.preprocess import SNV
from dtl_dist.study.rslocal_stage import RSLocalConfig, _save_checkpoint, run_rslocal
from dtl_dist.study.select_local import select_local

WL = make_grid(400, 2500, 50)
SMALL = dict(k=40, subset=40, b=8, ncomp=4)
CLI_SMALL = ["--k", "40", "--subset", "40", "--b", "8", "--ncomp", "4"]


def _two_domain_library(n=1200, p=30, seed=0):
    """Two kinds of library samples with different spectra-target relations; the site follows kind 0."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 2, n)
    beta = rng.normal(size=(2, p))
    X = rng.normal(size=(n, p))
    y = np.einsum("np,np->n", X, beta[kind]) + 0.1 * rng.normal(size=n)
    local_X = rng.normal(size=(20, p))
    return X, y, kind, local_X, local_X @ beta[0]


# --- draws, keys, shards ----------------------------------------------------------------------------------


def test_round_subsets_hold_each_pool_sample_once_from_a_keyed_stream():
    s = round_subsets(1000, 100, seed=3, iteration=2, group=5, rnd=1)
    assert s.shape == (10, 100) and np.array_equal(np.sort(s.ravel()), np.arange(1000))
    assert np.array_equal(s, round_subsets(1000, 100, 3, 2, 5, 1))
    for other in ((4, 2, 5, 1), (3, 3, 5, 1), (3, 2, 6, 1), (3, 2, 5, 2)):  # seed, iteration, group, round
        assert not np.array_equal(s, round_subsets(1000, 100, *other))
    # remainder: 1060 = 10 x 100 + 60 (>= m/2) gets an 11th subset filled from the permutation's start
    r = round_subsets(1060, 100, 0, 0, 0, 0)
    assert r.shape == (11, 100) and all(len(set(row)) == 100 for row in r)
    assert np.array_equal(np.bincount(r.ravel(), minlength=1060), np.where(np.isin(np.arange(1060), r[-1]) &
                                                                           np.isin(np.arange(1060), r[:-1]), 2, 1))
    assert round_subsets(1020, 100, 0, 0, 0, 0).shape == (10, 100)


def test_tie_keys_are_distinct_and_do_not_depend_on_who_holds_the_row():
    rows = np.arange(200_000)
    keys = tie_keys(rows, seed=1, iteration=7)
    assert keys.dtype == np.uint64 and np.unique(keys).size == rows.size
    assert np.array_equal(tie_keys(rows[5::11], 1, 7), keys[5::11])
    assert not np.array_equal(tie_keys(rows[:100], 1, 8), keys[:100])


def test_shard_plan_deals_blocks_round_robin():
    # 10 rows, 4 rows per shard: 3 shards, blocks of max(1, min(1024, 4 // 16)) = 1 row
    got = shard_plan(np.arange(10), shard_rows=4)
    assert {g: r.tolist() for g, r in got.items()} == {0: [0, 3, 6, 9], 1: [1, 4, 7], 2: [2, 5, 8]}
    valid = np.flatnonzero(np.arange(70_000) % 7)  # 60,000 rows: 4 shards of blocks of 1,024
    plan = shard_plan(valid, 16_384)
    assert sorted(plan) == [0, 1, 2, 3] and np.array_equal(np.sort(np.concatenate(list(plan.values()))), valid)
    assert np.array_equal(plan[1][:1024], valid[1024:2048]) and np.array_equal(plan[1][1024:2048], valid[5120:6144])


def test_merges_move_the_smallest_group_into_the_next_smallest():
    assert plan_merges({0: 5000, 1: 900, 2: 3000, 3: 800}, 4096) == [(3, 1), (1, 2)]
    assert plan_merges({0: 100, 4: 100}, 4096) == [(0, 4)]
    assert plan_merges({0: 5000, 1: 4096}, 4096) == [] and plan_merges({2: 10}, 4096) == []


def _ranked(w, keys):
    order = np.lexsort((keys, w))[::-1]
    return -w[order], keys[order]


@pytest.mark.parametrize("levels", [2, 5, 1000])
def test_the_distributed_drop_equals_a_sort_of_the_whole_pool(monkeypatch, levels):
    """Groups of random weaknesses with many ties, small sketches: the samples dropped by bracket + candidates
    + cut are exactly the d first of the whole pool ordered by (weakness, key) descending."""
    monkeypatch.setattr(shards, "SKETCH", 4)
    rng = np.random.default_rng(levels)
    sizes = [1, 37, 200, 5, 120]
    w = [rng.integers(0, levels, n).astype(float) for n in sizes]
    w[2][:3] = np.inf  # failed subsets everywhere: weakness +inf
    keys = [tie_keys(rng.choice(10**6, n, replace=False), 0, 0) for n in sizes]
    ranked = {g: _ranked(w[g], keys[g]) for g in range(len(sizes))}
    everything = sorted(((wi, int(ki), g) for g in ranked for wi, ki in zip(w[g], keys[g])), reverse=True)
    for d in (1, 2, 17, 100, 362, 363):
        high, low = bracket({g: sketch(*r) for g, r in ranked.items()}, d)
        candidates = {g: (0 if high is None else count_at_or_above(*r, high),) for g, r in ranked.items()}
        candidates = {g: (a[0], -r[0][a[0]:count_at_or_above(*r, low)], r[1][a[0]:count_at_or_above(*r, low)])
                      for (g, a), r in zip(candidates.items(), ranked.values())}
        cut = find_cut(candidates, d, high)
        dropped = {g: count_at_or_above(*r, cut) for g, r in ranked.items()}
        want = {g: sum(1 for entry in everything[:d] if entry[2] == g) for g in ranked}
        assert dropped == want and sum(dropped.values()) == d


# --- the search -------------------------------------------------------------------------------------------


def test_stops_at_exactly_k_and_prefers_the_site_domain():
    X, y, kind, local_X, local_y = _two_domain_library()
    res = rslocal(X, y, local_X, local_y, seed=1, **SMALL)
    assert res.selected.size == 40 and len(set(res.selected.tolist())) == 40
    sizes = [row["pool_size"] for row in res.trace]
    assert sizes[0] == 1200 and all(a > b for a, b in zip(sizes, sizes[1:]))
    assert all(row["dropped"] == min(math.ceil(0.05 * row["pool_size"]), row["pool_size"] - 40) for row in res.trace)
    assert (kind[res.selected] == 0).mean() > 0.75  # half the library is kind 0
    assert res.n_iterations == len(res.trace)


def test_first_iteration_drops_the_weakest_by_scikit_learn_scores():
    """Iteration 1 by hand: the keyed round subsets, scikit-learn PLS scores, mean score per sample, the 20 of
    highest (weakness, key) dropped."""
    X, y, _, local_X, local_y = _two_domain_library(n=400)
    states = []
    rslocal(X, y, local_X, local_y, seed=5, dtype="float64", on_checkpoint=states.append, checkpoint_every=0,
            **SMALL)
    total, count = np.zeros(400), np.zeros(400)
    for r in range(8):
        for subset in round_subsets(400, 40, 5, 0, 0, r):
            pls = PLSRegression(n_components=4, scale=False).fit(X[subset], y[subset])
            total[subset] += np.sqrt(np.mean((pls.predict(local_X).ravel() - local_y) ** 2))
            count[subset] += 1
    weak, keys = total / count, tie_keys(np.arange(400), 5, 0)
    dropped = sorted(range(400), key=lambda i: (weak[i], int(keys[i])), reverse=True)[:20]  # ceil(0.05 x 400)
    assert np.array_equal(states[0].pool, np.setdiff1d(np.arange(400), dropped))
    assert states[0].iteration == 1


def test_subsets_shrink_with_the_pool():
    assert [subset_size(p, 100, 10) for p in (1000, 200, 199, 60, 30, 12)] == [100, 100, 99, 30, 15, 12]
    # one subset of the whole pool would give every sample the same weakness: subsets shrink instead
    X, y, _, local_X, local_y = _two_domain_library(n=60)
    res = rslocal(X, y, local_X, local_y, k=10, subset=60, b=3, ncomp=4)
    assert res.selected.size == 10 and res.trace[0]["subset"] == 30


@pytest.fixture(scope="module")
def real_library():
    """SC.93 + SL.125 + UL.120 pooled (338 samples) as the library, CV.98's Kennard-Stone n = 30 as local."""
    sites = [limesoda_site(s) for s in ("SC.93", "SL.125", "UL.120", "CV.98")]
    grid = make_grid(420, 2500, 10)
    spectra = [SNV().fit_transform(resample(np.log10(100 / s["X"]), s["wavelengths"], grid)) for s in sites]
    scale = [1.0, 1 / 1.724, 1 / 1.724, 1.0]  # SOM -> SOC for the Swedish sites
    library_X, library_y = np.vstack(spectra[:3]), np.concatenate([s["y"] * f for s, f in zip(sites[:3], scale)])
    local = kennard_stone(spectra[3], 30)
    return library_X, library_y, spectra[3][local], sites[3]["y"][local]


@pytest.mark.parametrize("k", [15, 20, 60, 100, 300])
def test_the_selection_has_exactly_k_samples(real_library, k):
    library_X, library_y, local_X, local_y = real_library
    res = rslocal(library_X, library_y, local_X, local_y, k=k, b=10, seed=k)
    assert res.selected.size == k and len(set(res.selected.tolist())) == k
    assert all(row["pool_size"] - row["dropped"] >= k for row in res.trace)
    assert max(row["subset"] for row in res.trace) <= 100 and min(row["subset"] for row in res.trace) >= 12


def test_singular_subsets_are_counted_logged_and_the_search_goes_on(caplog):
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=(100, 30))
    copies = np.repeat(rng.normal(size=(3, 30)), [34, 33, 33], axis=0)  # 100 copies of 3 spectra
    X, y = np.vstack([distinct, copies]), rng.normal(size=200)
    local_X = rng.normal(size=(10, 30))
    with caplog.at_level("WARNING", logger="dtl_dist.select.rslocal"):
        res = rslocal(X, y, local_X, None, k=20, subset=14, b=4, ncomp=10, criterion="mahalanobis")
    assert sum(row["n_failed"] for row in res.trace) > 0
    assert any("could not be fitted" in r.getMessage() for r in caplog.records)
    assert res.selected.size == 20


def test_nan_library_targets_are_skipped_and_never_selected():
    X, y, _, local_X, local_y = _two_domain_library(n=600)
    y[::7] = np.nan
    res = rslocal(X, y, local_X, local_y, **SMALL)
    assert res.n_skipped == len(y[::7]) and np.all(np.isfinite(y[res.selected]))


@pytest.mark.parametrize("criterion", ["reconstruction", "mahalanobis"])
def test_label_free_criteria_need_no_local_values(criterion):
    X, y, _, local_X, _ = _two_domain_library(n=600)
    res = rslocal(X, y, local_X, None, criterion=criterion, **SMALL)
    assert res.selected.size == 40


def test_same_selection_for_any_threads_and_from_a_checkpoint():
    """Several groups (shards of 300 rows, merged as the pool shrinks): 1 and 3 threads and a resume from
    iteration 4 select the same samples with the same trace; another seed does not."""
    X, y, _, local_X, local_y = _two_domain_library(n=2400)
    states = []
    ref = rslocal(X, y, local_X, local_y, seed=2, shard_rows=300, engine=LocalShards(1),
                  on_checkpoint=states.append, checkpoint_every=0, **SMALL)
    assert ref.trace[0]["groups"] == 8 and ref.trace[-1]["groups"] == 1
    threaded = rslocal(X, y, local_X, local_y, seed=2, shard_rows=300, engine=LocalShards(3), **SMALL)
    resumed = rslocal(X, y, local_X, local_y, seed=2, shard_rows=300, state=states[3], **SMALL)
    for other in (threaded, resumed):
        assert np.array_equal(ref.selected, other.selected) and other.trace == ref.trace
    assert not np.array_equal(ref.selected, rslocal(X, y, local_X, local_y, seed=3, shard_rows=300,
                                                    **SMALL).selected)


# --- the stage and the CLI ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("rslocal")
    write_library(d / "lib.zarr", 1200, seed=1, wavelengths=WL)
    write_site(d / "site.zarr", 60, seed=2, wavelengths=WL)
    select_local(d / "site.zarr", 20)
    return d


def _invoke(*args):
    return CliRunner().invoke(app, ["rslocal", *map(str, args)])


def _selected_ids(out: Path) -> list[str]:
    with open(out / "selected.csv") as fh:
        assert fh.readline().startswith("# n_selected=")
        return [row["sample_id"] for row in csv.DictReader(fh)]


def test_cli_writes_selection_trace_localised_store_and_baseline(stores, tmp_path):
    out = tmp_path / "out"
    result = _invoke("--library", stores / "lib.zarr", "--site", stores / "site.zarr", "--out", out, *CLI_SMALL)
    assert result.exit_code == 0, result.output
    ids = _selected_ids(out)
    assert len(ids) == 40
    localised = SpectralLibrary.open(out / "localised.zarr")
    assert localised.n_samples == len(ids) + 20
    assert set(ids) <= set(localised.sample_id)
    with open(out / "trace.csv") as fh:
        trace = list(csv.DictReader(fh))
    assert int(trace[0]["pool_size"]) == 1200 and int(trace[-1]["pool_size"]) - int(trace[-1]["dropped"]) == 40
    assert (out / "trace.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    baseline = json.loads((out / "baseline.json").read_text())
    assert baseline["n_selected"] == len(ids) == baseline["k_requested"] == 40
    assert (out / "selected.csv").read_text().startswith(f"# n_selected={len(ids)} k_requested=40\n")
    assert f"n_selected {len(ids)} (k requested 40)" in result.stdout
    for model, n_train in (("rslocal_pls", len(ids) + 20), ("local_pls", 20)):
        assert baseline[model]["n_train"] == n_train and baseline[model]["test"]["n"] == 40
        assert 1 <= baseline[model]["ncomp"] <= 20 and baseline[model]["test"]["rmse"] > 0
    assert json.loads((out / "config.json").read_text())["k"] == 40
    # the API run with the same options selects the same samples
    lib = SpectralLibrary.open(stores / "lib.zarr")
    labelled, _ = SpectralLibrary.open(stores / "site.zarr").split()
    res = rslocal(lib.spectra(), lib.target("soc"), labelled.spectra(), labelled.target("soc"), preprocess=SNV(),
                  **SMALL)
    assert sorted(ids) == sorted(lib.sample_id[res.selected])


def test_resume_continues_from_the_checkpoint(stores, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    config = RSLocalConfig(library=str(stores / "lib.zarr"), site=str(stores / "site.zarr"), out=str(full),
                           k=40, subset=40, b=8, ncomp=4)
    run_rslocal(config, progress=False)
    lib = SpectralLibrary.open(stores / "lib.zarr")
    labelled, _ = SpectralLibrary.open(stores / "site.zarr").split()
    states = []
    rslocal(lib.spectra(), lib.target("soc"), labelled.spectra(), labelled.target("soc"), preprocess=SNV(),
            on_checkpoint=states.append, checkpoint_every=0, **SMALL)
    part.mkdir()
    _save_checkpoint(part, config, states[10])  # as if the run had been killed after iteration 11
    result = _invoke("--library", stores / "lib.zarr", "--site", stores / "site.zarr", "--out", part, "--resume",
                     *CLI_SMALL)
    assert result.exit_code == 0, result.output
    assert _selected_ids(part) == _selected_ids(full)
    assert (part / "trace.csv").read_text() == (full / "trace.csv").read_text()
    # a different search under --resume is refused
    result = _invoke("--library", stores / "lib.zarr", "--site", stores / "site.zarr", "--out", part, "--resume",
                     *CLI_SMALL, "--seed", "9")
    assert result.exit_code == 2 and "seed" in result.output


def _site_variant(stores, tmp_path, name, **create):
    site = SpectralLibrary.open(stores / "site.zarr")
    kw = dict(targets={"soc": site.target("soc")}, meta={"role": site.meta("role")}, units=site.units,
              preprocessing=site.preprocessing)
    kw.update(create)
    spectra = kw.pop("spectra", site.spectra())
    wl = kw.pop("wavelengths", site.wavelengths)
    return SpectralLibrary.create(tmp_path / name, spectra, wl, site.sample_id, **kw).path


@pytest.mark.parametrize("case, message", [
    ("k", "k=1200: expected 6 <= k <= 1199"),
    ("k_small", "k=5: expected 6 <= k <= 1199"),
    ("shard_rows", "shard_rows=0: expected a positive number of library rows per shard"),
    ("ncomp", "ncomp=40: expected 1 <= ncomp <= subset size - 2"),
    ("few_labelled", "at least 3"),
    ("grid", "wavelength grid"),
    ("preprocessing", "preprocessing"),
    ("strict_nan", "NaN"),
    ("address", "cannot reach"),
    ("scheduler_file", "no such file"),
])
def test_bad_input_exits_2_and_writes_nothing(stores, tmp_path, case, message):
    lib, site = stores / "lib.zarr", stores / "site.zarr"
    extra = list(CLI_SMALL)
    if case == "k":
        extra += ["--k", "1200"]
    elif case == "k_small":
        extra += ["--k", "5"]
    elif case == "shard_rows":
        extra += ["--shard-rows", "0"]
    elif case == "ncomp":
        extra += ["--ncomp", "40"]
    elif case == "few_labelled":
        role = np.array(["local_test"] * 60, dtype=object)
        role[:2] = "local_labelled"
        site = _site_variant(stores, tmp_path, "few.zarr", meta={"role": role.astype(str)})
    elif case == "grid":
        s = SpectralLibrary.open(site)
        site = _site_variant(stores, tmp_path, "grid.zarr", spectra=s.spectra()[:, :-1], wavelengths=WL[:-1])
    elif case == "preprocessing":
        site = _site_variant(stores, tmp_path, "pre.zarr", preprocessing=["savgol(11,2,1)"])
    elif case == "strict_nan":
        src = SpectralLibrary.open(lib)
        soc = src.target("soc").copy()
        soc[:5] = np.nan
        lib = SpectralLibrary.create(tmp_path / "nan.zarr", src.spectra(), src.wavelengths, src.sample_id,
                                     targets={"soc": soc}).path
        extra += ["--strict"]
    elif case == "address":
        extra += ["--address", "tcp://127.0.0.1:1", "--connect-timeout", "1s"]
    elif case == "scheduler_file":
        extra += ["--scheduler-file", tmp_path / "missing.json"]
    out = tmp_path / "out"
    result = _invoke("--library", lib, "--site", site, "--out", out, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_nan_library_targets_are_skipped_with_a_count(stores, tmp_path):
    src = SpectralLibrary.open(stores / "lib.zarr")
    soc = src.target("soc").copy()
    soc[:7] = np.nan
    lib = SpectralLibrary.create(tmp_path / "nan.zarr", src.spectra(), src.wavelengths, src.sample_id,
                                 targets={"soc": soc}).path
    result = _invoke("--library", lib, "--site", stores / "site.zarr", "--out", tmp_path / "out", *CLI_SMALL)
    assert result.exit_code == 0, result.output
    assert "skipping 7 library samples" in result.output
    assert not set(_selected_ids(tmp_path / "out")) & set(src.sample_id[:7])
