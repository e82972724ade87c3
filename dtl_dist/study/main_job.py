"""The main job on embedded defaults: the paper's study (Fig. 2, Table 3) for one real site, quick budget.

1. ingest the global library (the LimeSoDa vis-NIR sites other than the site, plus the Geeves NSW library
   when the user's data folder ``--data-dir`` / ``DTL_DATA`` holds it) and the site, as absorbance on
   420-2500 nm every 10 nm (section 2.2); the country library is a view of the global one (``country``);
2. run :func:`dtl_dist.study.run.run_study`: Kennard-Stone split, RS-LOCAL, the nine 1D-CNNs, the PLS and MBL
   baselines, the model recommended from the n labelled samples and the test metrics;
3. print the metrics table and write the report (``RUN/report.html``, :mod:`dtl_dist.study.report`).

A rerun resumes: finished stages are skipped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from dtl_dist.errors import UserInputError
from dtl_dist.library.ingest import LIMESODA_SITES, REAL_DATA_GRID, VISNIR_SITES, ingest, limesoda_source
from dtl_dist.library.real_data import DATA_ENV, data_dir, library_sources
from dtl_dist.study.config import StudyConfig
from dtl_dist.study.report import write_report
from dtl_dist.study.run import run_study


@dataclass(frozen=True)
class MainJob:
    """Options of ``dtl demo``: the site, its country, the output folder and the study's settings; ``grid``, the
    grid the site and the library share, and ``extra_library``, LimeSoDa sites added to the library, let the job
    run a site that does not cover 420-2500 nm (e.g. SA.112's 1000-2400 nm with ``grid="1000:2400:10"``)."""

    out: str = "demo_out"
    site: str = "UL.120"
    country: str | None = "SE"
    data_dir: str | None = None
    budget: str = "quick"
    trials: int | None = None
    seed: int = 0
    workers: int = 2
    grid: str = REAL_DATA_GRID
    extra_library: tuple = ()


def stores(job: MainJob, echo: Callable[[str], None]) -> tuple[Path, Path]:
    """Ingest the site, then the global library (each skipped when it exists; a site the grid does not fit is
    refused before the library is read)."""
    data = Path(job.out) / "data"
    library, site = data / "library.zarr", data / f"{job.site}.zarr"
    folder = data_dir(job.data_dir)  # a bad folder or file is reported before anything is written
    sources = library_sources([s for s in VISNIR_SITES if s != job.site] + list(job.extra_library), folder)
    if not site.exists():
        ingest([limesoda_source(job.site)], site, grid=job.grid)
    if not library.exists():
        if folder is None:
            echo(f"note: no --data-dir or {DATA_ENV}; the global library holds the LimeSoDa sites only")
        ingest(sources, library, grid=job.grid)
    return library, site


def run_main_job(job: MainJob, *, echo: Callable[[str], None] = print) -> dict:
    """Run the main job (see the module docstring); returns :func:`run_study`'s result."""
    if job.site not in LIMESODA_SITES:
        raise UserInputError(f"--site {job.site}: expected a LimeSoDa site with spectra ({', '.join(LIMESODA_SITES)})")
    library, site = stores(job, echo)
    study = Path(job.out) / "study"
    config = StudyConfig(library=str(library), site=str(site), out=str(study), country=job.country,
                         budget=job.budget, trials=job.trials, seed=job.seed, workers=job.workers,
                         resume=study.exists(), data_dir=None if job.data_dir is None else str(job.data_dir))
    result = run_study(config, echo=echo)
    echo(format_metrics(result["metrics"]))
    report = write_report(study, echo=lambda line: None)
    echo(f"report: {report}  (job options: {asdict(job)})")
    return result


def format_metrics(metrics) -> str:
    """The metrics table as text: test RMSE, ME, CCC, dRMSE and cv_rmse per model, the recommended one named."""
    lines = [f"{'model':<14} {'RMSE':>6} {'ME':>7} {'CCC':>6} {'R2':>6} {'dRMSE%':>7} {'cv_RMSE':>8} {'n_train':>7}"]
    for row in metrics.itertuples():
        name = row.model if row.model != "recommended" else f"-> {row.recommended_model}"
        lines.append(f"{name:<14} {row.rmse:6.3f} {row.me:7.3f} {row.ccc:6.3f} {row.r2:6.3f} "
                     f"{row.delta_rmse_pct:7.1f} {row.cv_rmse:8.3f} {row.n_train:7d}")
    lines.append("-> : the model recommended on the n labelled samples alone (no local_test data): the stack, "
                 "unless the best single pick or mean-1SE has a nested cv RMSE lower by more than one standard "
                 "error; among the models that use no library where the site lies outside it (RUN/choice.json)")
    return "\n".join(lines)
