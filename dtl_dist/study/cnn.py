"""The 1D-CNN stages of a study: a search per training set and a transfer per base model (paper 2.3.1-2.3.4).

A search (Local, Global, Country, DTL-I) tries the same candidate configs (:class:`~dtl_dist.nn.search
.CandidateRunner`: the known-good small CNNs first, then seeded draws from the space; with the paper budget
the paper's Table 4 architectures too) on every outer split of its design and keeps, per split, the config
with the lowest inner RMSE: the chosen configs' held-out predictions give the model's ``cv_rmse`` and the
final split's choice is the model. A transfer (DTL-R, DTL-IR) starts each split from the library CNN's fold
model that fits that split's local samples best and picks the freeze depth per split the same way, among the
paper's depths (front blocks fixed, section 2.3.3) and depth 0 (every block retrained from the library weights,
i.e. fine-tuning): on a site far from the library (CV.98's field-moist scans) the fixed front blocks alone
compressed the estimates, and the choice by inner RMSE decides per split. Trials and depth candidates run as
tasks of the study's Ray engine, each with ``--cpus-per-trial`` CPUs and ``--gpus-per-trial`` GPUs (a transfer:
one task per freeze depth and outer split).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from dtl_dist.errors import UserInputError
from dtl_dist.nn import paper_architectures as paper
from dtl_dist.nn.folds import kfold_assignment
from dtl_dist.nn.model_dir import load_model, save_model
from dtl_dist.nn.nested import Design
from dtl_dist.nn.search import CandidateRunner, TuneData, tune
from dtl_dist.nn.space import SMALL_DATA_STARTERS, SearchSpace, default_space
from dtl_dist.nn.stream import fit_library
from dtl_dist.nn.trainer import TrainConfig, fold_seed
from dtl_dist.nn.transfer import freeze_depths, transfer_representations, with_base_models
from dtl_dist.spectra.preprocess import SNV
from dtl_dist.study.context import StudyContext
from dtl_dist.study.data import Source


def starter_batch(n_train: int) -> int:
    """Batch size of the starters for ``n_train`` training samples: 8 below 64 samples (the 30 local ones),
    32 below 4,096 (localised data, small libraries: 2.3x faster than 8 and as accurate, bench_study), 128
    above."""
    return 8 if n_train < 64 else 32 if n_train < 4096 else 128


def starters(budget: str, space: SearchSpace, n_bands: int, n_train: int) -> list[dict]:
    """Configs a search tries first: the small known-good CNNs with :func:`starter_batch`; with the paper
    budget also the paper's Table 4 DTL-I_g architectures (where they fit ``n_bands``), with the default
    training settings."""
    found = [{**flat, "batch_size": starter_batch(n_train)} for flat in SMALL_DATA_STARTERS]
    if budget == "paper":
        for cnn in (paper.DTL_IG_CHINA, paper.DTL_IG_SWEDEN, paper.DTL_IG_USA):
            flat = SearchSpace.from_config(cnn, TrainConfig())
            if not space.validate(flat, n_bands):
                found.append(flat)
    return found


def search_stage(ctx: StudyContext, name: str, design: Design, directory: Path, what: str,
                 library: Source | None = None) -> dict:
    """Search the 1D-CNN of model ``name`` on ``design``; save it to ``RUN/models/name``; return its summary.

    A library model whose library is larger than ``--in-memory-max`` is searched on the design's sample of the
    library, then its fold models are trained on the whole library with the streamed trainer.
    """
    config = ctx.config
    space = default_space()
    data = TuneData.of(design, wavelengths=ctx.data.wavelengths, source=what)
    runner = CandidateRunner(directory / "trials", map_blocks=ctx.tasks(name),
                             starters=starters(config.budget, space, design.X.shape[1], design.final.train.size),
                             progress=lambda line: ctx.echo(f"{name}: {line}"))
    result = tune(data, space, trials=config.trials, runner=runner, seed=config.seed, mode="auto",
                  max_epochs=config.max_epochs)
    chosen, predictions = result.per_split()
    best = result.best
    if best is None:
        raise UserInputError(f"{name}: no trial of the search completed; see {directory / 'trials'}")
    table = result.table()
    table.to_csv(directory / "trials.csv", index=False)
    failed = int((table.status == "error").sum())
    if failed:
        ctx.echo(f"{name}: {failed} of {len(table)} trials failed (raised, or their worker died past its retries); "
                 f"the choice is among the others; see {directory / 'trials.csv'}")
    chosen_model = Path(best.checkpoint) / "model"
    n_train = design.final.train.size
    if library is not None and not library.in_memory:
        chosen_model = stream_library_model(ctx, library, space.to_config(best.params, seed=config.seed),
                                            directory / "streamed_model", name)
        predictions = [load_model(chosen_model).predict_folds(ctx.data.local_absorbance).mean(0)]
        n_train = library.size
    model = ctx.keep_model(name, chosen_model)
    return ctx.result(design, predictions, load_model(model), n_train, method="cnn search",
                      chosen=best.trial_id, params=best.params, inner_rmse=best.rmse,
                      per_split=[None if c is None else c.trial_id for c in chosen],
                      trials={status: int((table.status == status).sum()) for status in sorted(set(table.status))})


def _stream_fold(fold: int, ref, folds: np.ndarray, configs: tuple, validation_rows, seed: int, target: str) -> dict:
    """One fold model of a library 1D-CNN, trained on the library streamed from Zarr (a task)."""
    cnn_config, train_config = configs
    library = ref.open()
    val = validation_rows[fold]
    X_val = SNV().fit_transform(library.spectra(val)).astype(np.float32)
    fit = fit_library(library, cnn_config, replace(train_config, seed=fold_seed(seed, fold)), target=target,
                      rows=np.flatnonzero(folds != fold), validation=(X_val, library.target(target, val)))
    return {"state": fit.state_dict, "rmse": float(np.sqrt(min(fit.val_loss))) if fit.val_loss else np.nan}


def stream_library_model(ctx: StudyContext, library: Source, configs: tuple, directory: Path, name: str) -> Path:
    """Train the fold models of a library 1D-CNN on the whole library with the streamed trainer (one Ray task per
    fold; paper section 2.3.1) and save them as a model directory."""
    config = ctx.config
    folds = kfold_assignment(library.size, config.inner_folds, config.seed)
    validation_rows = [np.flatnonzero(folds == f) for f in range(config.inner_folds)]
    fits = ctx.tasks(name)(_stream_fold, range(config.inner_folds),
                        shared=(library.view.ref(), folds, configs, validation_rows, config.seed, config.target))
    return save_model(directory, configs[0], [f["state"] for f in fits], wavelengths=ctx.data.wavelengths,
                      fold_rmse=[f["rmse"] for f in fits], overwrite=True,
                      training={"train_config": configs[1].to_dict(), "streamed": True},
                      provenance={"study": str(ctx.out), "library": str(library.view.path)})


def transfer_stage(ctx: StudyContext, name: str, base: str, design: Design, directory: Path) -> dict:
    """Transfer the library CNN ``base`` (its saved fold models) onto ``design`` (DTL-R on the local data,
    DTL-IR on the localised data); save the result to ``RUN/models/name``; return its summary."""
    library_model = load_model(ctx.model_dir(base))
    fold_states = [model.state_dict() for model in library_model.fold_models]
    n_local = ctx.data.local_y.size
    local_rows = np.arange(design.y.size - n_local, design.y.size)
    design = with_base_models(design, fold_states, library_model.cnn_config, local_rows)
    trained = TrainConfig.from_dict(library_model.training.get("train_config", {}))
    retrain = replace(trained, batch_size=min(trained.batch_size, 16))
    if ctx.config.max_epochs is not None:
        retrain = replace(retrain, max_epochs=min(retrain.max_epochs, ctx.config.max_epochs),
                          patience=min(retrain.patience, ctx.config.max_epochs))
    depths = [0, *freeze_depths(library_model.cnn_config)]
    result = transfer_representations(design, library_model.cnn_config, retrain, depths=depths,
                                      map_blocks=ctx.tasks(name))
    model_dir = directory / "model"
    save_model(model_dir, library_model.cnn_config, result.final_states, wavelengths=ctx.data.wavelengths,
               fold_rmse=result.fits[result.freeze_depth].fold_rmse[-1], overwrite=True,
               training={"train_config": retrain.to_dict(), "freeze_depth": result.freeze_depth, "base": base},
               provenance={"study": str(ctx.out), "model": name, "base_model": base})
    model = ctx.keep_model(name, model_dir)
    return ctx.result(design, result.predictions(), load_model(model), design.final.train.size,
                      method="transfer", base=base, freeze_depth=result.freeze_depth, per_split=result.chosen,
                      depth_rmse=result.cv_rmse)
