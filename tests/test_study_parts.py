"""The pieces of a study against references: nested designs and their per-split choice, the training sets of
Fig. 2 as designs, PLS components by inner CV (scikit-learn), MBL (scikit-learn neighbours, WAPLS by hand),
and a library CNN trained with the streamed trainer when the library is larger than --in-memory-max."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.cross_decomposition import PLSRegression
from sklearn.neighbors import NearestNeighbors

from dtl_dist.library.ingest import REAL_DATA_GRID, ingest
from dtl_dist.linear.mbl import MBL
from dtl_dist.linear.pls_kernel import pls1_cv_ncomp
from dtl_dist.nn.builder import CNNConfig, ConvBlock, FCBlock
from dtl_dist.nn.folds import kfold_assignment
from dtl_dist.nn.model_dir import load_model
from dtl_dist.nn.nested import Design, choose_per_split, fit_design
from dtl_dist.nn.trainer import TrainConfig, cross_validate
from dtl_dist.study import baselines, cnn, designs
from dtl_dist.study.config import StudyConfig
from dtl_dist.study.context import StudyContext
from dtl_dist.study.data import load_study_data

CONFIG = CNNConfig([ConvBlock(4, 7, stride=3)], [FCBlock(8)])
TRAIN = TrainConfig(lr=3e-3, batch_size=8, max_epochs=6, patience=3, seed=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """UL.120 as the site (n = 12), CV.98 + SL.125 as the library (223 samples), SE the country library."""
    d = tmp_path_factory.mktemp("parts")
    library = ingest(["CV.98", "SL.125"], d / "library.zarr", grid=REAL_DATA_GRID)
    site = ingest(["UL.120"], d / "site.zarr", grid=REAL_DATA_GRID)
    config = StudyConfig(library=str(library.path), site=str(site.path), out=str(d / "run"), country="SE",
                         n_local=12, cv_folds=3, inner_folds=3, trials=1, k=20, max_epochs=4, workers=0,
                         in_memory_max=150)
    (d / "run").mkdir()
    return config, load_study_data(config, d / "run")


def test_a_one_split_design_trains_what_cross_validate_trains(data):
    _, study = data
    design = Design.single(study.local_X, study.local_y, folds=3, seed=4)
    fit = fit_design(design, CONFIG, TRAIN)
    cv = cross_validate(study.local_X, study.local_y, CONFIG, TRAIN, design.final.inner)
    assert fit.inner_rmse[-1] == pytest.approx(cv.mean_rmse, rel=1e-6)
    for a, b in zip(fit.final_states, cv.states):
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_the_choice_is_made_per_split_and_ties_go_to_the_first():
    chosen = choose_per_split({"a": [0.5, 0.2, np.inf], "b": [0.4, 0.2, np.nan], "c": [0.6, 0.3, np.inf]})
    assert chosen == ["b", "a", None]


def test_designs_of_fig_2(data):
    _, study = data
    n = study.local_y.size
    local = designs.local_design(study)
    assert len(local.splits) == 4
    for s, split in enumerate(local.splits[:-1]):  # outer folds partition the n samples; none trains on itself
        assert set(split.predict) == set(np.flatnonzero(study.outer == s))
        assert not set(split.train) & set(split.predict)
    assert set(local.final.train) == set(range(n)) and local.final.predict.size == 0
    # the library alone: one split predicting every local sample; the large library uses a sample of its rows
    library = designs.library_design(study, study.library)
    assert len(library.splits) == 1 and library.final.train.size == 150
    np.testing.assert_array_equal(library.final.predict, 150 + np.arange(n))
    # localised: each split's own selection plus its training local samples
    selected = [np.arange(s, s + 20) for s in range(4)]
    localised = designs.localised_design(study, study.library, selected)
    used = np.unique(np.concatenate(selected))
    for s, split in enumerate(localised.splits):
        rows = split.train[split.train < used.size]
        np.testing.assert_array_equal(used[rows], selected[s])
        local_rows = split.train[split.train >= used.size] - used.size
        np.testing.assert_array_equal(np.sort(local_rows), study.local_split(s)[0])
    # spiked reference: library rows never validate; every copy of a local sample keeps its inner fold
    reference = designs.reference_design(study, study.library, copies=3)
    split = reference.splits[0]
    assert np.all(split.inner[split.train < 150] == -1)
    local_train = split.train[split.train >= 150]
    assert local_train.size == 3 * study.local_split(0)[0].size
    for row in np.unique(local_train):
        assert np.unique(split.inner[split.train == row]).size == 1
    predictions = [np.full(split.predict.size, float(s)) for s, split in enumerate(local.splits)]
    np.testing.assert_array_equal(designs.assemble(study, local, predictions), study.outer.astype(float))


def test_pls_components_by_inner_cv_match_scikit_learn(data):
    _, study = data
    design = designs.local_design(study)
    predictions, choices, final = baselines.pls_design(design, max_ncomp=5)
    for split, (ncomp, _), values in zip(design.splits, choices, predictions):
        X, y = study.local_X[split.train].astype(np.float64), study.local_y[split.train]
        sse = np.zeros(5)
        for f in range(split.n_inner):
            tr, te = split.inner != f, split.inner == f
            top = min(5, tr.sum() - 1)
            for a in range(1, 6):
                model = PLSRegression(min(a, top), scale=False).fit(X[tr], y[tr])
                sse[a - 1] += ((model.predict(X[te]).ravel() - y[te]) ** 2).sum()
        assert ncomp == int(np.argmin(sse)) + 1
        if split.predict.size:
            reference = PLSRegression(ncomp, scale=False).fit(X, y).predict(study.local_X[split.predict]).ravel()
            np.testing.assert_allclose(values, reference, rtol=1e-8, atol=1e-8)


def test_pls_cv_with_explicit_splits_pools_the_held_out_rows():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 12)), rng.normal(size=40)
    splits = [(np.arange(10, 40), np.arange(0, 10)), (np.r_[0:10, 25:40], np.arange(10, 25))]
    _, rmse = pls1_cv_ncomp(X, y, 4, folds=splits, dtype="float64")
    for a in range(1, 5):
        sse = sum(((PLSRegression(a, scale=False).fit(X[tr], y[tr]).predict(X[te]).ravel() - y[te]) ** 2).sum()
                  for tr, te in splits)
        assert rmse[a - 1] == pytest.approx(np.sqrt(sse / 25), rel=1e-8)


def test_mbl_neighbours_and_weighted_average_pls(data):
    _, study = data
    X, y = study.library.spectra(np.arange(150)).astype(np.float64), study.library.y[:150]
    mbl = MBL(k=40, min_ncomp=2, max_ncomp=5).fit(X, y)
    target = study.local_X[:3].astype(np.float64)
    scores = lambda Z: (Z - mbl.x_mean_) @ mbl.rotations_ / mbl.score_scale_  # noqa: E731
    reference = NearestNeighbors(n_neighbors=40).fit(scores(X)).kneighbors(scores(target), return_distance=False)
    np.testing.assert_array_equal(np.sort(mbl.neighbours(target), 1), np.sort(reference, 1))
    # WAPLS by hand for the first spectrum: weights 1 / (s_a g_a) over a = 2..5 components
    rows = reference[0]
    estimates, weights = [], []
    for a in range(1, 6):
        pls = PLSRegression(a, scale=False).fit(X[rows], y[rows])
        t = pls.transform(target[:1])
        residual = target[0] - pls._x_mean - (t @ pls.x_loadings_.T)[0]
        if a >= 2:
            estimates.append(pls.predict(target[:1]).item())
            weights.append(1 / (np.sqrt(np.mean(residual**2)) * np.sqrt(np.mean(pls.coef_**2))))
    assert mbl.predict(target[:1]).item() == pytest.approx(np.dot(weights, estimates) / np.sum(weights), rel=1e-6)


def test_a_large_library_cnn_is_trained_streamed_on_all_of_it(data, ray_session, tmp_path):
    config, study = data
    from dtl_dist.engines.ray import map_blocks

    ctx = StudyContext(config, study, tmp_path, map_blocks(num_cpus=1), None, lambda line: None)
    directory = tmp_path / "stage"
    directory.mkdir()
    summary = cnn.search_stage(ctx, "Global", designs.library_design(study, study.library), directory,
                               "library", study.library)
    assert study.library.size == 223 and not study.library.in_memory
    assert summary["n_train"] == 223
    model = load_model(ctx.model_dir("Global"))
    assert len(model.fold_models) == 3 and model.training["streamed"] is True
    np.testing.assert_allclose(summary["cv_predictions"], model.predict(study.local_absorbance), rtol=1e-5)
    folds = kfold_assignment(223, 3, config.seed)
    assert np.bincount(folds).tolist() == [75, 74, 74]


def test_too_few_labelled_samples_for_the_folds_fall_back_to_leave_one_out(data, tmp_path):
    config, _ = data
    small = replace(config, out=str(tmp_path / "run"), n_local=8, cv_folds=5)
    (tmp_path / "run").mkdir()
    study = load_study_data(small, tmp_path / "run")
    assert study.n_outer == 8 and sorted(study.outer.tolist()) == list(range(8))
    assert any("leave-one-out" in note for note in study.notes)



def _planted(study, sample: int, soc: float):
    """The study's data with labelled sample ``sample``'s SOC set to ``soc`` (spectra unchanged)."""
    y = study.local_y.copy()
    y[sample] = soc
    return replace(study, local_y=y)


def test_a_planted_soc_never_reaches_its_own_outer_folds_prediction(data):
    """Fold leakage: one labelled sample's SOC planted at 1000 % (the others are a few %). Its out-of-fold
    prediction by the designs of Fig. 2 (PLS on the local, localised and spiked designs, a 1D-CNN on the local
    design), assembled as the study assembles cv_predictions.csv, is the one it gets with its true SOC: no model
    that predicts it saw it, while the splits that train on it move. The reference a leaking split would hit:
    the same outer split trained with its held-out samples in predicts the planted sample far above 100 %."""
    _, study = data
    n, sample = study.local_y.size, 0
    own = study.outer == study.outer[sample]
    planted = _planted(study, sample, 1000.0)
    selected = [np.arange(s, s + 20) for s in range(study.n_splits)]
    builds = {
        "local-PLS": designs.local_design,
        "RS-LOCAL-PLS": lambda d: designs.localised_design(d, d.library, selected),
        "spiked-PLS": lambda d: designs.reference_design(d, d.library, copies=5),
    }
    for name, build in builds.items():
        true, seen = (designs.assemble(d, build(d), baselines.pls_design(build(d), max_ncomp=5)[0])
                      for d in (study, planted))
        np.testing.assert_allclose(seen[own], true[own], rtol=1e-9, atol=1e-9, err_msg=name)
        assert np.abs(seen[~own] - true[~own]).max() > 0.1, name
        assert abs(seen[sample]) < 100, name
    cnn_true, cnn_seen = (designs.assemble(d, designs.local_design(d),
                                           fit_design(designs.local_design(d), CONFIG, TRAIN).predictions)
                          for d in (study, planted))
    np.testing.assert_allclose(cnn_seen[own], cnn_true[own], rtol=1e-5, atol=1e-5)
    assert np.abs(cnn_seen[~own] - cnn_true[~own]).max() > 0.1
    # the leaking reference: outer split `fold` trained on all n samples, its held-out ones included
    design = designs.local_design(planted)
    split = design.splits[study.outer[sample]]
    leaky = replace(split, train=np.arange(n), inner=planted.inner(n, study.outer[sample]))
    (values,), _, _ = baselines.pls_design(Design(design.X, design.y, (leaky,)), max_ncomp=5)
    assert values[list(split.predict).index(sample)] > 100
