"""``dtl study``: the paper's nine models for one site, the baselines, and the model to use (Fig. 2, Table 3).

:func:`run_study` checks the inputs, splits the site (section 2.1), builds the stages the model table needs
(:mod:`dtl_dist.study.models`): RS-LOCAL per library on Dask, a 1D-CNN search per training set and a transfer
per base model on Ray, the PLS and MBL baselines, the ensembles of the candidates (all of them, or those that use
no library where the coverage check puts the site outside it), and runs them as a DAG
(:mod:`dtl_dist.study.stages`): stages that are ready run at the same time, finished ones are skipped on a rerun.
It ends with ``metrics.csv`` (the model recommended from the n labelled samples alone, then the test metrics),
``predictions.csv``, ``cv_predictions.csv`` and every model under ``RUN/models/NAME``.

Run directory::

    study.json            options, notes, inputs and the library's coverage of the site (a resume must use the
                          same result options)
    study.lock            held by the study running here (a second one refuses; a killed one holds nothing)
    data/site.zarr        the site with its Kennard-Stone split (when the given site had none)
    stages/NAME/          each stage's outputs and stage.json (its key, summary and wall time)
    models/NAME/          every model, loadable without Ray or Dask (predicts from absorbance spectra)
    tasks.jsonl           where each CNN task ran: stage, node, GPU ids, device, start/end (study.task_log)
    metrics.csv, predictions.csv, cv_predictions.csv
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable

from dtl_dist import __version__
from dtl_dist.errors import UserInputError
from dtl_dist.library.atomic import remove_path, remove_temporaries, write_json
from dtl_dist.library.store import now_iso
from dtl_dist.select.rslocal import LocalShards
from dtl_dist.mapping import serial_map
from dtl_dist.study import baselines, cnn, designs, ensembles, instances
from dtl_dist.study.config import StudyConfig
from dtl_dist.study.context import StudyContext
from dtl_dist.study.coverage import site_coverage
from dtl_dist.study.data import load_study_data
from dtl_dist.study.evaluate import write_results
from dtl_dist.study.lock import LOCK_FILE, RunLock
from dtl_dist.study.models import ModelSpec, candidates, models_for
from dtl_dist.study.stages import Stage, locked, plan_stages, run_stages, stage_dir
from dtl_dist.study.task_log import TASKS_FILE, TaskLog

STUDY_FILE = "study.json"


def read_study_file(out: Path) -> dict:
    """``out/study.json``, checked: its ``options`` and ``config`` objects (a hand edit is a UserInputError)."""
    path = Path(out) / STUDY_FILE
    try:
        study = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise UserInputError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(study, dict) or not isinstance(study.get("options"), dict):
        raise UserInputError(f"{path}: expected a JSON object with an 'options' object, as dtl study writes it")
    study["config"] = StudyConfig.from_saved(study.get("config"), where=str(path))
    return study


def _check_out(config: StudyConfig, out: Path) -> None:
    """A new run needs an empty directory; ``--resume`` needs a study made with the same result options."""
    if not out.exists() or not any(p.name != LOCK_FILE for p in out.iterdir()):
        if config.resume:
            raise UserInputError(f"--out {out}: nothing to resume (no {STUDY_FILE})")
        return
    if not config.resume:
        raise UserInputError(f"--out {out}: directory exists and is not empty; pass --resume to continue that study "
                             "or choose another --out")
    if not (out / STUDY_FILE).is_file():
        raise UserInputError(f"--out {out}: no {STUDY_FILE} to resume from")
    saved = read_study_file(out)["options"]
    changed = sorted(key for key, value in config.results().items() if saved.get(key) != value)
    if changed:
        raise UserInputError(f"--resume: {', '.join(changed)} differ from the study in {out}; use the same options "
                             "or another --out")


def _fingerprint(view) -> dict:
    return {"path": str(view.path), "n_samples": view.n_samples, "provenance": json.dumps(view.provenance,
                                                                                       sort_keys=True)[-2000:]}


def _source(ctx: StudyContext, spec: ModelSpec):
    return ctx.data.country if spec.library == "country" else ctx.data.library


def _design(ctx: StudyContext, spec: ModelSpec, copies: int = 1):
    source = _source(ctx, spec)
    if spec.data == "local":
        return designs.local_design(ctx.data)
    if spec.data == "library":
        return designs.library_design(ctx.data, source)
    if spec.data == "localised":
        selected = instances.selections(stage_dir(ctx.out, f"rslocal:{spec.library}"), ctx.data.n_splits)
        return designs.localised_design(ctx.data, source, selected)
    return designs.reference_design(ctx.data, source, copies)


def build_stages(ctx: StudyContext, members: list[str]) -> list[Stage]:
    """The stages the model table needs, each listed after the stages it needs; the ensembles combine
    ``members`` (:func:`dtl_dist.study.models.candidates`)."""
    specs = models_for(ctx.data.country is not None)
    stages = []
    for library in sorted({s.library for s in specs if s.data == "localised"}):
        source = ctx.data.country if library == "country" else ctx.data.library
        stages.append(Stage(f"rslocal:{library}",
                            lambda d, source=source: instances.rslocal_stage(ctx, source, d), kind="rslocal"))
    singles = [s for s in specs if s.make != "ensemble"]
    ordered = sorted(singles, key=lambda s: s.make == "transfer")  # a transfer after the search of its base
    for spec in ordered:
        needs = ((f"rslocal:{spec.library}",) if spec.data == "localised" else ()) + ((spec.base,) if spec.base else ())
        kind = spec.make if spec.make in ("search", "transfer") else "baseline"
        stages.append(Stage(spec.name, lambda d, spec=spec: _run_model(ctx, spec, d), needs, kind))
    for spec in specs:
        if spec.make == "ensemble":  # after all of its members
            stages.append(Stage(spec.name, lambda d, spec=spec: ensembles.ensemble_stage(ctx, spec.name, members, d),
                                tuple(members), "ensemble"))
    return stages


def _run_model(ctx: StudyContext, spec: ModelSpec, directory: Path) -> dict:
    if spec.make == "search":
        what = "local samples" if spec.library is None else f"{spec.data} data of the {spec.library} library"
        library = _source(ctx, spec) if spec.data == "library" else None
        return cnn.search_stage(ctx, spec.name, _design(ctx, spec), directory, what, library)
    if spec.make == "transfer":
        return cnn.transfer_stage(ctx, spec.name, spec.base, _design(ctx, spec), directory)
    if spec.make == "pls":
        return baselines.pls_stage(ctx, spec.name, _design(ctx, spec), directory)
    if spec.make == "spiked":
        return baselines.spiked_stage(ctx, spec.name, {w: _design(ctx, spec, w) for w in baselines.SPIKING_WEIGHTS},
                                      directory)
    return baselines.mbl_stage(ctx, spec.name, _design(ctx, spec), directory)


def _engines(config: StudyConfig, stack: ExitStack, kinds: set, out: Path,
             echo: Callable[[str], None]) -> tuple[Callable | None, Callable | None]:
    """(stage name -> task map on Ray, RS-LOCAL's engine on Dask or in-process); an engine that no stage left to
    run (of ``kinds``) uses is not started. Every CNN trial and transfer task gets ``--cpus-per-trial`` CPUs and
    ``--gpus-per-trial`` GPUs, checked against the Ray nodes here, before any work; its record goes to
    ``RUN/tasks.jsonl`` (:mod:`dtl_dist.study.task_log`)."""
    stage_map = None
    if {"search", "transfer"} & set(kinds):
        from dtl_dist.engines import ray as ray_engine

        started = not ray_engine.running()
        ray = ray_engine.init(config.ray_address, config.cpus)
        if started:
            stack.callback(ray.shutdown)
        cpus, gpus = ray_engine.trial_resources(config.cpus_per_trial, config.gpus_per_trial,
                                                allow_cpu_fallback=config.cpu_fallback, warn=echo)
        log = TaskLog(out / TASKS_FILE)

        def stage_map(name: str) -> Callable:
            return ray_engine.map_blocks(num_cpus=cpus, num_gpus=gpus, on_task=log.for_stage(name))
    if "rslocal" not in kinds:
        return stage_map, None
    if not (config.workers or config.scheduler_file or config.address or config.jobqueue):
        return stage_map, LocalShards(config.threads)
    from dtl_dist.engines import dask as dask_engine

    client = dask_engine.client(scheduler_file=config.scheduler_file, address=config.address,
                                n_workers=config.workers or None, threads_per_worker=config.threads or 1,
                                jobqueue=config.jobqueue)
    stack.callback(client.close)
    return stage_map, dask_engine.ShardEngine(client)


def run_study(config: StudyConfig, *, echo: Callable[[str], None] = print) -> dict:
    """Run the study (see the module docstring) and return ``{"metrics": DataFrame, "recommended": name, ...}``.

    Raises
    ------
    UserInputError
        Bad inputs (grid, units, target, country, too few samples) or a resume with changed options, before
        anything is written; at once when another study runs in ``config.out`` (:mod:`dtl_dist.study.lock`).
    """
    out = Path(config.out)
    echo = locked(echo)
    fresh = not out.exists()
    lock = RunLock(out)  # a second study on this directory stops here
    try:
        return _run_study(config, out, fresh, echo)
    finally:
        lock.release()


@contextmanager
def _nothing_left_if_refused(out: Path, fresh: bool):
    """Bad input refused before any work leaves no new run directory: the lock and the site's split copy are all
    a failed start may have written."""
    try:
        yield
    except UserInputError:
        if fresh:
            remove_path(out)
        raise


def _run_study(config: StudyConfig, out: Path, fresh: bool, echo: Callable[[str], None]) -> dict:
    with _nothing_left_if_refused(out, fresh):
        _check_out(config, out)
        data = load_study_data(config, out)
        inputs = {"library": _fingerprint(data.library.view), "site": _fingerprint(data.site),
                  "country": None if data.country is None else _fingerprint(data.country.view)}
        options = {**config.results(), "inputs": inputs}
        ctx = StudyContext(config, data, out, serial_map, None, echo)
        coverage = site_coverage(data, config.k)
        specs = models_for(data.country is not None)
        members = candidates(specs, coverage["kind"])
        stages = build_stages(ctx, members)
        _, chosen, finished = plan_stages(stages, out, options, config.only)  # an --only that cannot run fails here
        kinds = {stage.kind for stage in chosen if finished(stage) is None}
    with ExitStack() as stack:
        with _nothing_left_if_refused(out, fresh):  # a resource request no Ray node can meet stops here
            ctx.stage_map, ctx.rslocal_engine = _engines(config, stack, kinds, out, echo)
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        for path in remove_temporaries(out):  # this study holds the lock: a temporary is a killed writer's
            echo(f"note: removed {path.relative_to(out)}, left by a study that was killed while writing it")
        write_json(out / STUDY_FILE, {"options": config.results(), "config": config.to_dict(), "notes": data.notes,
                                      "inputs": inputs, "coverage": coverage, "dtl_dist_version": __version__,
                                      "command": " ".join(sys.argv), "started": now_iso()})
        for note in data.notes:
            echo(f"note: {note}")
        echo(f"study of {config.site}: n = {data.local_y.size} local_labelled ({data.n_outer} outer folds), "
             f"N - n = {data.test_ids.size} local_test; library {data.library.size} samples"
             + ("" if data.country is None else f", country library {data.country.size}"))
        echo(f"library coverage: {coverage['verdict']}")
        summaries = run_stages(stages, out, options, only=config.only, echo=echo)
    waiting = [spec.name for spec in specs if spec.name not in summaries]
    if waiting:
        echo(f"stages of kinds {', '.join(config.only)} done; still to run: {', '.join(waiting)} (rerun with --resume "
             "and the other kinds, or without --only)")
        return {"metrics": None, "recommended": None, "summaries": summaries, "notes": data.notes}
    metrics = write_results(data, {spec.name: summaries[spec.name] for spec in specs}, out, config.target,
                            config.level, members)
    recommended = metrics.loc[metrics.model == "recommended", "recommended_model"].item()
    echo(f"study done in {time.perf_counter() - started:.0f} s; wrote {out}/metrics.csv, predictions.csv, "
         f"cv_predictions.csv and {out}/models/")
    return {"metrics": metrics, "recommended": recommended, "summaries": summaries, "notes": data.notes,
            "coverage": coverage}
