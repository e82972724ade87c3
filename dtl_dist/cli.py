"""The ``dtl`` command line: parse arguments, build a config, call one API function.

No logic a test would want to call lives here. User errors (:class:`dtl_dist.errors.UserInputError`)
are printed as one line on stderr and exit with code 2.
"""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

from dtl_dist.errors import UserInputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Deep transfer learning of soil spectral libraries for local soil organic carbon (Shen et al. 2022).",
)


def user_errors(fn):
    """Turn a UserInputError into a one-line message and exit code 2; a warning about the user's files (an
    unverified store) into a one-line note."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from dtl_dist.library.integrity import UnverifiedStore

        with warnings.catch_warnings():
            warnings.simplefilter("once", UnverifiedStore)
            shown = warnings.showwarning
            warnings.showwarning = lambda message, category, *rest: (
                typer.echo(f"note: {message}", err=True) if issubclass(category, UnverifiedStore)
                else shown(message, category, *rest))
            try:
                return fn(*args, **kwargs)
            except UserInputError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(code=2) from None

    return wrapper


# --- commands -----------------------------------------------------------------------------------------
# Each command: @app.command() + @user_errors, options only, then one call into the package.


@app.command()
@user_errors
def ingest(
    sources: list[str] = typer.Argument(..., help="Files (.csv, .parquet, .npz, or a folder with one .npz) and/or "
                                        "LimeSoDa site ids (e.g. UL.120: units, target and country are known); "
                                        "with --format ossl the OSSL v1.2 tables (.csv or .csv.gz)."),
    fmt: str = typer.Option("table", "--format", help="table: files as declared by the options below; ossl: the "
                            "Open Soil Spectral Library v1.2 as published, ossl_all_L0_v1.2.csv.gz or "
                            "ossl_visnir_L0_v1.2.csv.gz + ossl_soillab_L0_v1.2.csv.gz + ossl_soilsite_L0_v1.2.csv.gz "
                            "(joined on id.layer_uuid_txt): spectra scan_visnir.<nm>_ref, SOC oc_usda.c729_w.pct, "
                            "meta/source = dataset.code_ascii_txt, meta/country = location.country_iso.3166_txt "
                            "kept as given: ISO 3166-1 alpha-3 (USA, DEU), while LimeSoDa sites and most user files "
                            "use alpha-2 (US, DE); codes are not translated, so select OSSL countries with the "
                            "three letters (dtl study --country USA). Rows without vis-NIR or SOC are skipped."),
    where: list[str] = typer.Option([], help="--format ossl: keep rows with FIELD=VALUE[,VALUE] (repeatable, ANDed; "
                                    "fields dataset, country or any OSSL column), e.g. --where dataset=LUCAS.SSL."),
    out: Path = typer.Option(..., "--out", "-o", help="Spectral library store (a Zarr directory) to write."),
    units: Optional[str] = typer.Option(None, help="Spectral units of the files: reflectance_fraction, "
                                        "reflectance_percent or absorbance."),
    target: Optional[str] = typer.Option(None, help="Column (or .npz key, default y) with SOC or SOM."),
    target_unit: Optional[str] = typer.Option(None, help="Unit of the target (default: as the file says, else %)."),
    target_scale: Optional[float] = typer.Option(None, help="Factor converting the target to SOC in %."),
    som: bool = typer.Option(False, "--som", help="The target is SOM: convert to SOC with the factor 1/1.724."),
    id_column: Optional[str] = typer.Option(None, help="Column of sample ids (default: generated NAME/row)."),
    meta: list[str] = typer.Option([], help="Metadata column to keep, as COLUMN or FIELD=COLUMN (repeatable)."),
    name: Optional[str] = typer.Option(None, help="Source dataset name stored in meta/source (default: file stem)."),
    country: Optional[str] = typer.Option(None, help="Country of every sample of the files (e.g. AU)."),
    group: Optional[str] = typer.Option(None, help="Group of every sample of the files."),
    lat: Optional[float] = typer.Option(None, help="Latitude of every sample of the files."),
    lon: Optional[float] = typer.Option(None, help="Longitude of every sample of the files."),
    grid: Optional[str] = typer.Option(None, help="Target grid START:STOP:STEP nm (default 400:2500:10, the "
                                       "paper's; the store's own with --append). Sites starting at 420 nm "
                                       "(UL.120, SL.125) need 420:2500:10, the grid of the real-data library."),
    append: bool = typer.Option(False, "--append", help="Add the rows to the existing store --out."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Ingest spectra into ONE library store: absorbance log10(1/R) on one grid, SOC in % (atomic).

    Example: dtl ingest $DTL_DATA/geeves_nsw CV.98 SC.93 SL.125 UL.120 --units reflectance_fraction
    --country AU --grid 420:2500:10 --out real.zarr  (the file options describe the files; LimeSoDa ids
    carry their own).
    """
    from dtl_dist.library.ingest import ingest as ingest_sources, ossl_source, source_of

    declared = dict(units=units, target=target, target_unit=target_unit, target_scale=target_scale, som=som,
                    id_column=id_column, meta=meta, name=name, country=country, lat=lat, lon=lon)
    if fmt not in ("table", "ossl"):
        raise UserInputError(f"--format {fmt!r}: expected table or ossl")
    if fmt == "ossl":
        chosen = [ossl_source(sources, where=where, group=group or "OSSL", **declared)]
    elif where:
        raise UserInputError("--where filters rows of --format ossl tables only")
    else:
        chosen = [source_of(s, group=group, **declared) for s in sources]
    lib = ingest_sources(chosen, out, grid=grid, append=append, overwrite=overwrite, progress=not quiet)
    skipped = [r["skipped"] for r in lib.provenance[-len(chosen):] if "skipped" in r]
    read = "".join(f"; read {s['rows']} rows, skipped {s['no_visnir']} without vis-NIR, {s['no_oc']} without "
                   f"SOC, {s['where']} by --where" for s in skipped)
    typer.echo(f"wrote {lib.path}: {lib.n_samples} samples x {lib.n_bands} bands ({lib.units}){read}")


@app.command()
@user_errors
def info(
    store: Path = typer.Argument(..., help="Spectral library or site store."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables."),
    upgrade: bool = typer.Option(False, "--upgrade", help="Name the dimensions of a store written before they were "
                                 "named (sample, wavelength), in place, so xarray.open_zarr reads it; metadata only."),
    verify: bool = typer.Option(False, "--verify", help="Decode every chunk of every array and check its "
                                "checksum (reads the whole store); a damaged chunk exits 2 naming it."),
) -> None:
    """Table 1 style summary (K, SOC mean, s.d., min, Q1, median, Q3, max) per library and country."""
    import json

    from dtl_dist.library.summary import library_info, render_info

    if upgrade:
        from dtl_dist.library.store import SpectralLibrary
        from dtl_dist.library.xarray_layout import name_dimensions

        SpectralLibrary.open(store)  # a dtl store, checked, before anything is written
        changed = name_dimensions(store)
        typer.echo(f"{store}: " + (f"named dimensions of {', '.join(changed)}" if changed else "already up to date"),
                   err=as_json)

    summary = library_info(store, verify=verify)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        render_info(summary)


@app.command("select-local")
@user_errors
def select_local(
    site: Path = typer.Argument(..., help="Site store (e.g. from `dtl ingest UL.120 --grid 420:2500:10`)."),
    n: int = typer.Option(30, "--n", help="Number of local_labelled samples (the paper's n = 30)."),
    metric: str = typer.Option("euclidean", help="Kennard-Stone distance: euclidean or mahalanobis."),
) -> None:
    """Kennard-Stone split of a site (on SNV spectra) into local_labelled n and local_test N - n, saved in it."""
    from dtl_dist.study.select_local import select_local as split_site

    split = split_site(site, n, metric=metric)
    typer.echo(f"{site}: local_labelled {split.n_labelled}, local_test {split.n_test}"
               + (f", unmeasured {split.n_unmeasured}" if split.n_unmeasured else ""))


@app.command()
@user_errors
def synth(
    n: int = typer.Option(..., "--n", help="Number of library samples (1,000,000+ is fine: written chunk by chunk)."),
    out: Path = typer.Option(..., "--out", "-o", help="Library store (Zarr directory) to write."),
    seed: int = typer.Option(0, help="Random seed: same seed, same library, whatever the workers or chunks."),
    grid: str = typer.Option("400:2500:10", help="Wavelength grid START:STOP:STEP nm."),
    countries: int = typer.Option(10, help="Number of synthetic countries (each with 1-3 spectrometers)."),
    chunk_rows: int = typer.Option(10_000, help="Rows per Zarr chunk and per task."),
    workers: int = typer.Option(1, help="1 = in this process (fastest on a small machine); N > 1 = a Dask "
                                "LocalCluster of N worker processes (starting it costs seconds)."),
    scheduler_file: Optional[Path] = typer.Option(None, help="Run on the Dask cluster of this scheduler file "
                                                  "(--out must be on a file system the workers share)."),
    site_n: Optional[int] = typer.Option(None, help="Also write a local site of this many samples."),
    site_out: Optional[Path] = typer.Option(None, help="Site store to write (with --site-n)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing stores."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Write a synthetic vis-NIR library (absorbance, SOC in %) and optionally a local site with a domain shift."""
    from dtl_dist.library.synthetic import SynthConfig, synth as write_synthetic

    config = SynthConfig(out, n, seed=seed, grid=grid, countries=countries, chunk_rows=chunk_rows, site_n=site_n,
                         site_out=site_out, overwrite=overwrite)  # validates before any cluster starts
    if workers < 1:
        raise UserInputError(f"--workers: expected an integer >= 1, got {workers}")
    if workers == 1 and scheduler_file is None:
        stores = write_synthetic(config, progress=not quiet)
    else:
        from dtl_dist.engines.dask import client, map_blocks

        with client(scheduler_file=scheduler_file, n_workers=workers) as dask_client:
            stores = write_synthetic(config, map_blocks=map_blocks(dask_client), progress=not quiet)
    for lib in filter(None, stores):
        typer.echo(f"wrote {lib.path}: {lib.n_samples} samples x {lib.n_bands} bands ({lib.units})")


@app.command("tune")
@user_errors
def tune_cmd(
    data: Path = typer.Option(..., "--data", help="Store to model (e.g. the k+n localised store), absorbance."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory: trials.csv/.parquet, best_config.json, "
                             "model/ and the Ray Tune experiment (ray/)."),
    trials: int = typer.Option(200, "--trials", help="Number of 1D-CNN configs to try."),
    folds: int = typer.Option(10, "--folds", help="Cross-validation folds (the same for every trial)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the folds, the TPE sampler and the weights."),
    target: str = typer.Option("soc", "--target", help="Target property of the store."),
    cpus_per_trial: float = typer.Option(1, "--cpus-per-trial", help="CPUs (torch threads) per trial."),
    gpus_per_trial: float = typer.Option(0, "--gpus-per-trial", help="GPUs per trial; 0.25 = four trials per GPU."),
    cpu_fallback: bool = typer.Option(False, "--cpu-fallback", help="Train on CPU if GPUs are asked for but absent."),
    max_concurrent: Optional[int] = typer.Option(None, "--max-concurrent", help="Trials at once (default: as "
                                                 "resources allow)."),
    address: Optional[str] = typer.Option(None, "--address", help="Join this Ray cluster (HOST:PORT or auto) "
                                          "instead of starting a local Ray."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted search in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
) -> None:
    """Search the 1D-CNN (Ray Tune: Optuna TPE + ASHA) by 10-fold CV RMSE; save the best fold ensemble."""
    from dtl_dist.study.tune_stage import run_tune

    result = run_tune(data, out, trials=trials, folds=folds, seed=seed, target=target, cpus_per_trial=cpus_per_trial,
                      gpus_per_trial=gpus_per_trial, cpu_fallback=cpu_fallback, max_concurrent=max_concurrent,
                      address=address, resume=resume, progress=not quiet)
    best = result.best
    done = f"best RMSE {best.rmse:.4f} ({best.trial_id}), model in {out / 'model'}" if best else "no trial completed"
    typer.echo(f"{len(result.trials)} trials, {len(result.complete)} complete; {done}")


@app.command()
@user_errors
def rslocal(
    library: Path = typer.Option(..., help="Library store to transfer instances from."),
    site: Path = typer.Option(..., help="Site store with its local split (`dtl select-local`)."),
    out: Path = typer.Option(..., help="Output directory (selected ids, trace, k + n store, baseline, config)."),
    k: int = typer.Option(100, "--k", help="Library samples to select."),
    subset: int = typer.Option(100, help="Samples per random subset (m)."),
    b: int = typer.Option(40, "--b", help="Appearances of each sample per iteration."),
    retain: float = typer.Option(0.95, help="Fraction of the pool kept per iteration."),
    ncomp: int = typer.Option(10, help="PLS components of the subset models."),
    criterion: str = typer.Option("rmse", help="Subset score: rmse, reconstruction or mahalanobis."),
    seed: int = typer.Option(0, help="Random seed (with --shard-rows, all the selection depends on)."),
    target: str = typer.Option("soc", help="Target property."),
    strict: bool = typer.Option(False, help="Refuse a library with NaN targets instead of skipping them."),
    resume: bool = typer.Option(False, help="Continue from the checkpoint in --out."),
    workers: int = typer.Option(0, help="Dask LocalCluster workers (0: in-process)."),
    scheduler_file: Optional[Path] = typer.Option(None, help="Join the Dask cluster of this scheduler file."),
    address: Optional[str] = typer.Option(None, help="Join the Dask scheduler at this address."),
    mpi: bool = typer.Option(False, help="Start Dask with dask-mpi (automatic under mpiexec)."),
    threads: Optional[int] = typer.Option(None, help="Threads per Dask worker (default 1), or of this process "
                                          "when in-process (default: all cores). One worker process per node "
                                          "with a thread per core holds the library once per node."),
    jobqueue: Optional[Path] = typer.Option(None, help="dask-jobqueue YAML (scheduler, jobs, cluster): Dask "
                                            "workers as SLURM/PBS jobs (see cluster/jobqueue/)."),
    interface: Optional[str] = typer.Option(None, help="Network interface of a multi-host dask-mpi cluster "
                                            "(e.g. hsn0); default loopback on one host."),
    connect_timeout: str = typer.Option("10s", help="How long to try to reach an existing scheduler."),
    shard_rows: int = typer.Option(16_384, help="Library rows per shard: subsets are drawn within a shard (or "
                                   "merged shards) by the process holding it; part of the selection's key."),
    checkpoint_every: float = typer.Option(30.0, help="Seconds between checkpoints (a restart after a lost "
                                           "worker or --resume repeats at most this much work)."),
    retries: int = typer.Option(2, help="Lost Dask workers survived (each restarts from the last checkpoint)."),
    dtype: str = typer.Option("float32", help="PLS precision: float32 or float64."),
) -> None:
    """RS-LOCAL-v2.0 (paper 2.3.2): select k library samples for a site; write the k + n localised store."""
    from dtl_dist.study.rslocal_stage import RSLocalConfig, run_rslocal

    config = RSLocalConfig(library=str(library), site=str(site), out=str(out), k=k, subset=subset, b=b,
                           retain=retain, ncomp=ncomp, criterion=criterion, seed=seed, target=target,
                           dtype=dtype, shard_rows=shard_rows, checkpoint_every=checkpoint_every,
                           retries=retries, strict=strict, resume=resume, workers=workers,
                           scheduler_file=str(scheduler_file) if scheduler_file else None, address=address,
                           mpi=mpi, connect_timeout=connect_timeout, threads=threads,
                           jobqueue=None if jobqueue is None else str(jobqueue), interface=interface)
    summary = run_rslocal(config, echo=lambda line: typer.echo(line, err=True))
    line = f"n_selected {summary['n_selected']} (k requested {summary['k_requested']}) in {summary['iterations']} iterations"
    for name in ("rslocal_pls", "local_pls"):
        if name in summary:
            line += f"; {name} test RMSE {summary[name]['test']['rmse']:.4g} (ncomp {summary[name]['ncomp']})"
    typer.echo(f"{line}; outputs in {out}")


@app.command()
@user_errors
def study(
    library: Path = typer.Option(..., help="Global library store (absorbance, SOC)."),
    site: Path = typer.Option(..., help="Site store; split by Kennard-Stone unless it has a split (select-local)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (stages/, models/, metrics.csv, ...)."),
    country: Optional[str] = typer.Option(None, help="Country library as a view of --library, e.g. SE: the code as "
                                          "the store holds it; OSSL stores ISO 3166-1 alpha-3 (USA, SWE), LimeSoDa "
                                          "and most files alpha-2 (US, SE), and codes are not translated."),
    country_library: Optional[Path] = typer.Option(None, help="Country library as a separate store."),
    n_local: int = typer.Option(30, help="Local samples to label (Kennard-Stone), when the site has no split."),
    k: int = typer.Option(100, "--k", help="Library samples RS-LOCAL transfers."),
    budget: str = typer.Option("quick", help="quick (known-good small CNNs) or paper (hundreds of trials)."),
    trials: Optional[int] = typer.Option(None, help="Trials per CNN search (default: the budget's)."),
    cv_folds: int = typer.Option(5, help="Outer folds of the n labelled samples (cv_rmse, recommendation)."),
    inner_folds: Optional[int] = typer.Option(None, help="Folds inside every model (default: the budget's)."),
    seed: int = typer.Option(0, help="Seed of every split, draw and initialisation."),
    target: str = typer.Option("soc", help="Target property."),
    subset: int = typer.Option(100, help="RS-LOCAL subset size m."),
    b: int = typer.Option(40, "--b", help="RS-LOCAL appearances of each sample per iteration."),
    retain: float = typer.Option(0.95, help="RS-LOCAL fraction of the pool kept per iteration."),
    ncomp: int = typer.Option(10, help="RS-LOCAL PLS components."),
    max_epochs: Optional[int] = typer.Option(None, help="Cap on the epochs of every 1D-CNN (default: its own)."),
    workers: int = typer.Option(2, help="Dask LocalCluster workers for RS-LOCAL (0: in-process)."),
    threads: Optional[int] = typer.Option(None, help="Threads per Dask worker (default 1), or of this process "
                                          "in-process."),
    jobqueue: Optional[Path] = typer.Option(None, help="dask-jobqueue YAML: RS-LOCAL's Dask workers as batch jobs."),
    scheduler_file: Optional[Path] = typer.Option(None, help="Run RS-LOCAL on the Dask cluster of this file."),
    address: Optional[str] = typer.Option(None, help="Run RS-LOCAL on the Dask scheduler at this address."),
    ray_address: Optional[str] = typer.Option(None, help="Run searches and transfers on this Ray cluster."),
    cpus: Optional[int] = typer.Option(None, help="CPUs of the local Ray (default: all)."),
    cpus_per_trial: float = typer.Option(1, "--cpus-per-trial", help="CPUs (torch threads) of every CNN trial and "
                                         "transfer task."),
    gpus_per_trial: float = typer.Option(0, "--gpus-per-trial", help="GPUs of every CNN trial and transfer task; "
                                         "0.25 = four per GPU."),
    cpu_fallback: bool = typer.Option(False, "--cpu-fallback", help="Run on CPU (with a warning) if GPUs are asked "
                                      "for but the Ray cluster has none."),
    resume: bool = typer.Option(False, "--resume", help="Continue the study in --out (same options)."),
    only: Optional[str] = typer.Option(None, help="Run only these kinds of stage, comma-separated: rslocal, "
                                       "search, transfer, baseline, ensemble (e.g. one kind per cluster job)."),
    level: float = typer.Option(0.9, help="Coverage level of the prediction intervals."),
) -> None:
    """The paper's nine models for one site, PLS and MBL baselines, and the model to use (Fig. 2, Table 3)."""
    from dtl_dist.study.config import StudyConfig
    from dtl_dist.study.main_job import format_metrics
    from dtl_dist.study.run import run_study

    config = StudyConfig(
        library=str(library), site=str(site), out=str(out), country=country,
        country_library=None if country_library is None else str(country_library), n_local=n_local, k=k,
        budget=budget, trials=trials, cv_folds=cv_folds, inner_folds=inner_folds, seed=seed, target=target,
        subset=subset, b=b, retain=retain, ncomp=ncomp, max_epochs=max_epochs, workers=workers, threads=threads,
        jobqueue=None if jobqueue is None else str(jobqueue),
        scheduler_file=None if scheduler_file is None else str(scheduler_file), address=address,
        ray_address=ray_address, cpus=cpus, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
        cpu_fallback=cpu_fallback, resume=resume, level=level,
        only=None if only is None else tuple(k.strip() for k in only.split(",")))
    result = run_study(config, echo=lambda line: typer.echo(line, err=True))
    if result["metrics"] is not None:
        typer.echo(format_metrics(result["metrics"]))


@app.command()
@user_errors
def report(
    run: Path = typer.Argument(..., help="A finished study run directory (dtl study --out RUN)."),
) -> None:
    """RUN/report.html: the study's tables and figures in one self-contained page (paper Tables 1, 3, Figs. 3-4)."""
    from dtl_dist.study.report import write_report

    write_report(run, echo=typer.echo)


@app.command()
@user_errors
def predict(
    model: Path = typer.Option(..., help="A model directory (RUN/models/NAME), or a study run: its recommended model."),
    spectra: Path = typer.Option(..., help="New spectra: .csv, .parquet or .npz, as `dtl ingest` reads them."),
    out: Path = typer.Option(..., "--out", "-o", help="CSV to write: sample_id, soc, soc_lo, soc_hi (SOC %)."),
    units: str = typer.Option(..., help="Spectral units of the file: reflectance_fraction, reflectance_percent or "
                              "absorbance."),
    id_column: Optional[str] = typer.Option(None, help="Column of sample ids (default: generated NAME/row)."),
    level: float = typer.Option(0.9, help="Coverage level of the prediction interval."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """SOC estimates and prediction intervals for new spectra from a study's saved model."""
    from dtl_dist.library.ingest import Source
    from dtl_dist.study.intervals import check_level
    from dtl_dist.study.predict import predict_file

    done = predict_file(model, Source(str(spectra), units=units, id_column=id_column), out,
                        level=check_level(level), progress=not quiet)
    typer.echo(f"wrote {out}: {done['rows']} estimates from {done['model']}, {level:.0%} intervals +/- "
               f"{done['half_width']:.3g} % SOC")


@app.command()
@user_errors
def wait(
    scheduler_file: Optional[Path] = typer.Option(None, help="Wait for this Dask scheduler file and its workers."),
    workers: int = typer.Option(1, help="Dask workers to wait for (with --scheduler-file)."),
    ray_address: Optional[str] = typer.Option(None, help="Wait for the Ray cluster at HOST:PORT and its nodes."),
    nodes: int = typer.Option(1, help="Ray nodes to wait for (with --ray-address)."),
    timeout: float = typer.Option(300, help="Seconds before giving up (exit 2 with the reason)."),
) -> None:
    """Wait until a cluster started by a job script is up (scheduler file and workers, or Ray head and nodes)."""
    if (scheduler_file is None) == (ray_address is None):
        raise UserInputError("give one of --scheduler-file and --ray-address")
    if scheduler_file is not None:
        from dtl_dist.engines.dask import wait_for_workers

        threads = wait_for_workers(scheduler_file, workers, timeout)
        typer.echo(f"Dask cluster of {scheduler_file}: {workers} worker(s), {threads} thread(s)")
    else:
        from dtl_dist.engines.ray import wait_for_nodes

        resources = wait_for_nodes(ray_address, nodes, timeout)
        typer.echo(f"Ray cluster at {ray_address}: {nodes} node(s), {resources.get('CPU', 0):g} CPU(s), "
                   f"{resources.get('GPU', 0):g} GPU(s)")


@app.command()
@user_errors
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Output folder (a rerun resumes)."),
    site: str = typer.Option("UL.120", help="LimeSoDa site used as the local site."),
    country: str = typer.Option("SE", help="Country of the site: its country library is that part of the "
                                "global library."),
    budget: str = typer.Option("quick", help="quick or paper."),
    trials: Optional[int] = typer.Option(None, help="Trials per CNN search (default: the budget's)."),
    seed: int = typer.Option(0, help="Random seed."),
    workers: int = typer.Option(2, help="Dask workers for RS-LOCAL (0: in-process)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder with user data (geeves_nsw/); "
                                            "default $DTL_DATA, else the LimeSoDa sites only."),
    grid: str = typer.Option("420:2500:10", help="Grid START:STOP:STEP nm of the site and the library: inside "
                             "both (e.g. 420:2490:10 for SSP.460, whose spectra end at 2498 nm)."),
) -> None:
    """The main job on embedded defaults: the study on a real LimeSoDa site (UL.120, country SE), quick budget."""
    from dtl_dist.study.main_job import MainJob, run_main_job

    run_main_job(MainJob(out=str(out), site=site, country=country, budget=budget, trials=trials, seed=seed,
                         workers=workers, data_dir=None if data_dir is None else str(data_dir), grid=grid),
                 echo=typer.echo)


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
