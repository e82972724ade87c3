"""The main job on embedded defaults: real spectra -> library and site stores -> Kennard-Stone -> DTL-I.

A small, complete instance of the paper's design (Fig. 2a) on public data, run in-process / on a local Ray:

1. ingest a library (the LimeSoDa vis-NIR sites other than the local one, plus the Geeves NSW library, AU,
   when the user's data folder ``--data-dir`` / ``DTL_DATA`` holds it) and the local site, as absorbance on 420-2500 nm every 10 nm (section 2.2);
2. split the site by Kennard-Stone into n = 30 local_labelled and N - n local_test (section 2.1);
3. transfer instances with RS-LOCAL (section 2.3.2) to the k + n localised data;
4. compare, on the local_test: local PLS vs RS-LOCAL-PLS, and the local 1D-CNN vs DTL-I (a 1D-CNN searched
   on the k + n data, section 2.3.4) by RMSE, ME and Lin's CCC with dRMSE (section 2.4, eq. 1).

Each stage writes into ``out`` and is skipped when its outputs are already there, so a rerun resumes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from dtl_dist.library.atomic import atomic_path, remove_path, write_json
from dtl_dist.library.ingest import REAL_DATA_GRID, VISNIR_SITES, ingest, limesoda_source
from dtl_dist.library.real_data import DATA_ENV, data_dir, library_sources
from dtl_dist.library.store import SpectralLibrary
from dtl_dist.library.summary import library_info, render_info
from dtl_dist.metrics import delta_rmse, evaluate
from dtl_dist.study.rslocal_stage import RSLocalConfig, run_rslocal
from dtl_dist.study.select_local import select_local


@dataclass(frozen=True)
class DemoConfig:
    """Options of ``dtl demo``."""

    out: str = "demo_out"
    site: str = "CV.98"
    n: int = 30
    k: int = 100
    trials: int = 8
    folds: int = 10
    seed: int = 0
    data_dir: str | None = None


def _stores(config: DemoConfig, echo) -> tuple[Path, Path]:
    data = Path(config.out) / "data"
    library, site = data / "library.zarr", data / f"{config.site}.zarr"
    if not library.exists():
        folder = data_dir(config.data_dir)
        if folder is None:
            echo(f"note: no --data-dir or {DATA_ENV}; the library holds the LimeSoDa sites only")
        ingest(library_sources([s for s in VISNIR_SITES if s != config.site], folder), library, grid=REAL_DATA_GRID)
    if not site.exists():
        ingest([limesoda_source(config.site)], site, grid=REAL_DATA_GRID)
        select_local(site, config.n)
    return library, site


def _cnn(store: Path, out: Path, test_X: np.ndarray, config: DemoConfig) -> np.ndarray:
    """Search a 1D-CNN on ``store`` (skipped when ``out/model`` exists) and predict ``test_X``."""
    from dtl_dist.nn.model_dir import load_model
    from dtl_dist.study.tune_stage import run_tune

    if not (out / "model").is_dir():
        remove_path(out)  # an interrupted search is simply redone: it is small
        run_tune(store, out, trials=config.trials, folds=config.folds, seed=config.seed, progress=True)
    return load_model(out / "model").predict(test_X)


def _figure(path: Path, observed: np.ndarray, predictions: dict[str, np.ndarray], site: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(predictions), figsize=(3.2 * len(predictions), 3.4), dpi=100, squeeze=False)
    lo, hi = observed.min(), observed.max()
    for ax, (name, pred) in zip(axes[0], predictions.items()):
        m = evaluate(observed, pred)
        ax.scatter(observed, pred, s=12, alpha=0.7)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_title(f"{name}\nRMSE {m['rmse']:.2f}  CCC {m['lins_ccc']:.2f}", fontsize=9)
        ax.set_xlabel("observed SOC (%)")
    axes[0][0].set_ylabel("estimated SOC (%)")
    fig.suptitle(f"{site}: local_test (N - n)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def run_demo(config: DemoConfig, *, echo: Callable[[str], None] = print) -> dict:
    """Run the main job (see the module docstring); returns the comparison table as a dict."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(config))
    library_path, site_path = _stores(config, echo)
    render_info(library_info(library_path))
    render_info(library_info(site_path))

    rs_out = out / "rslocal"
    if not (rs_out / "baseline.json").is_file():
        resume = (rs_out / "checkpoint.npz").is_file()
        if not resume:
            remove_path(rs_out)  # an interrupted start without a checkpoint: nothing worth keeping
        run_rslocal(RSLocalConfig(library=str(library_path), site=str(site_path), out=str(rs_out), k=config.k,
                                  seed=config.seed, resume=resume), echo=echo)
    site = SpectralLibrary.open(site_path)
    labelled, test = site.split()
    local_store = out / "data" / "local_labelled.zarr"
    if not local_store.exists():
        labelled.save(local_store)
    table = pd.read_csv(rs_out / "predictions.csv", dtype={"sample_id": str}).set_index("sample_id")
    test = test.subset(ids=table.index)
    observed, test_X = table["observed"].to_numpy(), test.spectra()
    predictions = {"Local PLS": table["local_pls"].to_numpy(), "RS-LOCAL-PLS": table["rslocal_pls"].to_numpy()}
    echo(f"1D-CNN search on the n = {labelled.n_samples} local samples (local 1D-CNN, paper 2.3.1):")
    predictions["Local 1D-CNN"] = _cnn(local_store, out / "cnn_local", test_X, config)
    echo("1D-CNN search on the k + n localised samples (DTL-I, paper 2.3.4):")
    predictions["DTL-I 1D-CNN"] = _cnn(rs_out / "localised.zarr", out / "cnn_dtl_i", test_X, config)

    rows = {name: evaluate(observed, pred) for name, pred in predictions.items()}
    for name, row in rows.items():
        reference = rows["Local PLS" if "PLS" in name else "Local 1D-CNN"]["rmse"]
        row["delta_rmse_pct"] = delta_rmse(reference, row["rmse"])
    write_json(out / "comparison.json", {"site": config.site, "n": labelled.n_samples,
                                         "n_test": test.n_samples, "models": rows})
    _figure(out / "observed_vs_estimated.png", observed, predictions, config.site)
    echo(f"\n{config.site}: n = {labelled.n_samples} local_labelled, N - n = {test.n_samples} local_test")
    echo(f"{'model':<16} {'RMSE':>6} {'ME':>6} {'CCC':>6} {'dRMSE %':>8}")
    for name, row in rows.items():
        echo(f"{name:<16} {row['rmse']:6.3f} {row['mean_error']:6.3f} {row['lins_ccc']:6.3f} "
             f"{row['delta_rmse_pct']:8.1f}")
    echo(f"\nwrote {out}/comparison.json, {out}/observed_vs_estimated.png, {rs_out}/trace.png")
    return rows
