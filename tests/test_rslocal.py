"""RS-LOCAL-v2.0 (paper section 2.3.2): subset draws, weakness, scores against scikit-learn, stopping rules,
block-size invariance, the ``dtl rslocal`` stage (outputs, resume) and its bad-input errors."""

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
from dtl_dist.select import kennard_stone
from dtl_dist.select.rslocal import (
    SearchContext,
    draw_subsets,
    drop_weakest,
    rslocal,
    score_subsets,
    subset_size,
    tie_keys,
    weakness,
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


# --- the algorithm --------------------------------------------------------------------------------------


def test_draw_subsets_b_appearances_distinct_members_and_keyed_stream():
    s = draw_subsets(1000, 100, 7, seed=3, iteration=2)
    assert s.shape == (70, 100)
    assert np.array_equal(np.bincount(s.ravel(), minlength=1000), np.full(1000, 7))
    assert all(len(set(row)) == 100 for row in s)
    assert np.array_equal(s, draw_subsets(1000, 100, 7, seed=3, iteration=2))
    assert not np.array_equal(s, draw_subsets(1000, 100, 7, seed=3, iteration=3))
    # remainder: 1060 = 10 x 100 + 60 (>= m/2) gets an 11th subset per round, 1020 does not
    assert draw_subsets(1060, 100, 4, 0, 0).shape == (44, 100)
    assert draw_subsets(1020, 100, 4, 0, 0).shape == (40, 100)
    assert all(len(set(row)) == 100 for row in draw_subsets(1060, 100, 4, 0, 0))


def test_weakness_is_mean_score_of_the_subsets_holding_a_sample():
    subsets = np.array([[0, 1], [1, 2], [2, 0]])
    w = weakness(subsets, np.array([1.0, 3.0, 8.0]), pool_size=4)
    assert np.allclose(w[:3], [(1 + 8) / 2, (1 + 3) / 2, (3 + 8) / 2])
    assert np.isnan(w[3])


def test_subset_scores_match_scikit_learn_pls():
    X, y, _, local_X, local_y = _two_domain_library(n=300)
    rows = draw_subsets(300, 40, 1, seed=0, iteration=0)[:5].astype(np.int32)
    for criterion in ("rmse", "reconstruction", "mahalanobis"):
        context = SearchContext(X, y, local_X, local_y, 4, criterion, None, "float64", b=1, seed=0)
        got = score_subsets(X, rows, y[rows], context)
        want = []
        for r in rows:
            pls = PLSRegression(n_components=4, scale=False).fit(X[r], y[r])
            if criterion == "rmse":
                want.append(np.sqrt(np.mean((pls.predict(local_X).ravel() - local_y) ** 2)))
            elif criterion == "reconstruction":
                T = pls.transform(local_X)
                want.append(np.sqrt(np.mean((local_X - X[r].mean(0) - T @ pls.x_loadings_.T) ** 2)))
            else:
                T_sub, T_loc = pls.x_scores_, pls.transform(local_X)
                d = T_loc.mean(0) - T_sub.mean(0)
                want.append(np.sqrt(d @ np.linalg.solve(np.cov(T_sub.T), d)))
        assert np.allclose(got, want, rtol=1e-8), criterion


def test_stops_at_target_and_prefers_the_site_domain():
    X, y, kind, local_X, local_y = _two_domain_library()
    res = rslocal(X, y, local_X, local_y, seed=1, **SMALL)
    assert 40 <= res.selected.size <= math.ceil(40 * 1.05)
    sizes = [row["pool_size"] for row in res.trace]
    assert sizes[0] == 1200 and all(a > b for a, b in zip(sizes, sizes[1:]))
    assert all(row["dropped"] == min(math.ceil(0.05 * row["pool_size"]), row["pool_size"] - 40) for row in res.trace)
    assert (kind[res.selected] == 0).mean() > 0.75  # half the library is kind 0
    assert res.n_iterations == len(res.trace)


def _brute_force_drop(weak, n_drop, key):
    """Reference for the tie rule: a sample is dropped when fewer than ``n_drop`` scored samples rank above it
    (higher weakness, or equal weakness and a higher key)."""
    drop = np.zeros(weak.size, dtype=bool)
    for i in range(weak.size):
        if np.isfinite(weak[i]):
            above = sum(1 for j in range(weak.size) if np.isfinite(weak[j]) and
                        (weak[j] > weak[i] or (weak[j] == weak[i] and key[j] > key[i])))
            drop[i] = above < n_drop
    return drop


@pytest.mark.parametrize("levels", [2, 3, 50])
def test_ties_at_the_threshold_never_drop_more_than_the_share(levels):
    rng = np.random.default_rng(levels)
    weak = rng.integers(0, levels, 200).astype(float)  # few distinct values: many ties at the threshold
    weak[::17] = np.nan  # in no subset: never dropped
    key = rng.random(200)
    for n_drop in (0, 1, 10, 37, 150, 200):
        got = drop_weakest(weak, n_drop, key)
        assert np.array_equal(got, _brute_force_drop(weak, n_drop, key))
        assert got.sum() == min(n_drop, np.isfinite(weak).sum())


def test_first_iteration_drops_exactly_the_weak_samples():
    X, y, _, local_X, local_y = _two_domain_library(n=400)
    states = []
    rslocal(X, y, local_X, local_y, seed=5, on_iteration=states.append, **SMALL)
    pos = draw_subsets(400, 40, 8, seed=5, iteration=0)
    rows = pos.astype(np.int32)
    context = SearchContext(X, y, local_X, local_y, 4, "rmse", None, "float32", b=8, seed=5)
    scores = score_subsets(X, rows, y[rows].astype(np.float32), context)
    w = weakness(pos, scores, 400)
    kept = np.flatnonzero(~_brute_force_drop(w, 20, tie_keys(400, 5, 0)))  # ceil(0.05 x 400) = 20
    assert np.array_equal(states[0].pool, kept)
    assert np.array_equal(kept, np.flatnonzero(w < np.quantile(w, 0.95)))  # no ties: the retain quantile


def test_subsets_shrink_with_the_pool():
    assert [subset_size(p, 100, 10) for p in (1000, 200, 199, 60, 30, 12)] == [100, 100, 99, 30, 15, 12]
    # one subset of the whole pool would give every sample the same weakness: subsets shrink instead
    X, y, _, local_X, local_y = _two_domain_library(n=60)
    res = rslocal(X, y, local_X, local_y, k=10, subset=60, b=3, ncomp=4)
    assert 10 <= res.selected.size <= 11 and res.trace[0]["subset"] == 30


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
def test_the_selection_has_between_k_and_k_1_plus_r_samples(real_library, k):
    library_X, library_y, local_X, local_y = real_library
    res = rslocal(library_X, library_y, local_X, local_y, k=k, b=10, seed=k)
    assert k <= res.selected.size <= math.ceil(k * 1.05)
    assert len(set(res.selected.tolist())) == res.selected.size
    assert all(row["pool_size"] - row["dropped"] >= k for row in res.trace)
    assert max(row["subset"] for row in res.trace) <= 100 and min(row["subset"] for row in res.trace) >= 12


def test_singular_subsets_score_inf_are_logged_and_the_search_goes_on(caplog):
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=(100, 30))
    copies = np.repeat(rng.normal(size=(3, 30)), [34, 33, 33], axis=0)  # 100 copies of 3 spectra
    X, y = np.vstack([distinct, copies]), rng.normal(size=200)
    local_X = rng.normal(size=(10, 30))
    with caplog.at_level("WARNING", logger="dtl_dist.select.rslocal"):
        res = rslocal(X, y, local_X, None, k=20, subset=14, b=4, ncomp=10, criterion="mahalanobis")
    assert sum(row["n_failed"] for row in res.trace) > 0
    assert any("could not be fitted" in r.getMessage() for r in caplog.records)
    assert 20 <= res.selected.size <= 21


def test_nan_library_targets_are_skipped_and_never_selected():
    X, y, _, local_X, local_y = _two_domain_library(n=600)
    y[::7] = np.nan
    res = rslocal(X, y, local_X, local_y, **SMALL)
    assert res.n_skipped == len(y[::7]) and np.all(np.isfinite(y[res.selected]))


@pytest.mark.parametrize("criterion", ["reconstruction", "mahalanobis"])
def test_label_free_criteria_need_no_local_values(criterion):
    X, y, _, local_X, _ = _two_domain_library(n=600)
    res = rslocal(X, y, local_X, None, criterion=criterion, **SMALL)
    assert 40 <= res.selected.size <= 42


def test_selection_does_not_depend_on_block_size_or_resume():
    X, y, _, local_X, local_y = _two_domain_library(n=800)
    states = []
    ref = rslocal(X, y, local_X, local_y, seed=2, block_size=1, on_iteration=states.append, **SMALL)
    other = rslocal(X, y, local_X, local_y, seed=2, block_size=10_000, **SMALL)
    resumed = rslocal(X, y, local_X, local_y, seed=2, state=states[3], **SMALL)
    assert np.array_equal(ref.selected, other.selected)
    assert np.array_equal(ref.selected, resumed.selected) and resumed.trace == ref.trace
    assert not np.array_equal(ref.selected, rslocal(X, y, local_X, local_y, seed=3, **SMALL).selected)


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
    assert len(ids) >= 40
    localised = SpectralLibrary.open(out / "localised.zarr")
    assert localised.n_samples == len(ids) + 20
    assert set(ids) <= set(localised.sample_id)
    with open(out / "trace.csv") as fh:
        trace = list(csv.DictReader(fh))
    assert int(trace[0]["pool_size"]) == 1200 and int(trace[-1]["pool_size"]) >= len(ids)
    assert (out / "trace.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    baseline = json.loads((out / "baseline.json").read_text())
    assert baseline["n_selected"] == len(ids) and baseline["k_requested"] == 40 and 40 <= len(ids) <= 42
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
            on_iteration=states.append, **SMALL)
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
