"""``dtl report RUN``: one self-contained HTML page with the evidence of a study, the paper's way (2.4, 3).

``RUN/report.html`` (images embedded, no network) and each figure as a PNG in ``RUN/report/``:

- Table 1: SOC of the library, the country library, the k samples RS-LOCAL selected, the n labelled local
  samples and the local_test samples;
- Table 3: every model's test metrics and cv_rmse, the recommended model marked, and how it was chosen; the
  ensembles' members and weights;
- Fig. 3a: SOC densities (library, k selected, n local); Fig. 3b: PCA of the global library's spectra with the
  country library, the k selected and the site projected (PC1-PC2, PC1-PC3);
- Fig. 4a: dRMSE of every model against the local 1D-CNN; Fig. 4b: observed vs estimated for every model, the
  recommended model with its prediction intervals; Fig. 4c: a point map of the site (where it has coordinates);
- the library's coverage of the site (:mod:`dtl_dist.study.coverage`), as ``dtl study`` printed it;
- the RS-LOCAL traces; the provenance: command, options, package versions, data checksums, wall time per stage.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from dtl_dist.errors import UserInputError
from dtl_dist.library.atomic import atomic_path, write_text
from dtl_dist.library.summary import STATISTICS, soc_statistics
from dtl_dist.spectra.preprocess import SNV
from dtl_dist.study.data import load_study_data
from dtl_dist.study.evaluate import CHOICE
from dtl_dist.study.figures import _pyplot, observed_vs_estimated
from dtl_dist.study.instances import selections
from dtl_dist.study.models import MODELS
from dtl_dist.study.run import STUDY_FILE, read_study_file
from dtl_dist.study.stages import STAGE_FILE, stage_dir, stage_summary

REPORT_DIR = "report"
PACKAGES = ("dtl-dist", "torch", "numpy", "scikit-learn", "zarr", "dask", "distributed", "ray", "limesoda")
COLOURS = {"library": "tab:grey", "country": "tab:orange", "k selected": "tab:green", "n local": "tab:red",
           "local_test": "tab:blue"}


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def soc_densities(path: Path, groups: dict) -> Path:
    """Fig. 3a: kernel density of SOC per group."""
    from scipy.stats import gaussian_kde

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    top = max(np.percentile(v, 99) for v in groups.values() if len(v))
    grid = np.linspace(0, top, 300)
    for name, values in groups.items():
        if len(values) > 2 and np.std(values) > 0:
            ax.plot(grid, gaussian_kde(values)(grid), label=f"{name} (K = {len(values)})", color=COLOURS[name])
    ax.set_xlabel("SOC (%)")
    ax.set_ylabel("density")
    ax.set_title("Fig. 3a: SOC distributions")
    ax.legend(fontsize=8)
    return _save(fig, path)


def pca_projection(path: Path, reference: np.ndarray, groups: dict) -> Path:
    """Fig. 3b: PCA fitted on the global library's SNV spectra, the other sets projected on it."""
    from sklearn.decomposition import PCA

    plt = _pyplot()
    pca = PCA(3).fit(reference)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, (i, j) in zip(axes, ((0, 1), (0, 2))):
        for name, X in groups.items():
            if len(X):
                scores = pca.transform(X)
                ax.scatter(scores[:, i], scores[:, j], s=6 if name == "library" else 14, alpha=0.6, label=name,
                           color=COLOURS[name])
        ax.set_xlabel(f"PC{i + 1} ({pca.explained_variance_ratio_[i]:.0%} of variance)")
        ax.set_ylabel(f"PC{j + 1} ({pca.explained_variance_ratio_[j]:.0%})")
    axes[0].legend(fontsize=8, markerscale=1.5)
    fig.suptitle("Fig. 3b: principal components of the global library's spectra, other sets projected")
    return _save(fig, path)


def delta_rmse_bars(path: Path, metrics: pd.DataFrame, recommended: str) -> Path:
    """Fig. 4a: dRMSE (%) of every model against the local 1D-CNN (paper eq. 1)."""
    plt = _pyplot()
    rows = metrics[metrics.model != "recommended"]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    colours = ["tab:red" if m == recommended else ("tab:green" if v > 0 else "tab:grey")
               for m, v in zip(rows.model, rows.delta_rmse_pct)]
    values = rows.delta_rmse_pct.to_numpy(dtype=float)
    floor = min(-10.0, max(-50.0, np.nanmin(values) - 5))
    ax.bar(rows.model, np.maximum(values, floor), color=colours)
    for x, value in enumerate(values):
        if value < floor:  # clipped (global and library models far off the site): the value is written instead
            ax.text(x, floor * 0.95, f"{value:.0f}", ha="center", va="bottom", fontsize=7, color="white")
    top = max(10.0, np.nanmax(values) + 5)
    ax.set_ylim(floor, top)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("dRMSE against Local (%)")
    ax.set_title(f"Fig. 4a: change in test RMSE against the local 1D-CNN (red: {recommended}, recommended)")
    ax.tick_params(axis="x", rotation=45, labelsize=8)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    return _save(fig, path)


def intervals_panel(path: Path, predictions: pd.DataFrame, model: str, level: float) -> Path:
    """The recommended model's estimates with their prediction intervals against the observed SOC."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    observed, estimate = predictions.observed, predictions[model]
    inside = (observed >= predictions[f"{model}_lo"]) & (observed <= predictions[f"{model}_hi"])
    ax.errorbar(observed, estimate, yerr=[estimate - predictions[f"{model}_lo"], predictions[f"{model}_hi"] - estimate],
                fmt="none", ecolor="tab:grey", alpha=0.5, lw=0.8)
    ax.scatter(observed[inside], estimate[inside], s=12, label="observed inside the interval")
    ax.scatter(observed[~inside], estimate[~inside], s=12, color="tab:red", label="outside")
    lo, hi = float(min(observed.min(), predictions[f"{model}_lo"].min())), float(max(observed.max(),
                                                                                   predictions[f"{model}_hi"].max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("observed SOC (%)")
    ax.set_ylabel("estimated SOC (%)")
    ax.set_title(f"{model}: {level:.0%} prediction intervals, coverage {inside.mean():.0%}", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def site_map(path: Path, lon, lat, estimate, model: str) -> Path:
    """Fig. 4c: the site's samples at their coordinates, coloured by the recommended model's estimate."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    points = ax.scatter(lon, lat, c=estimate, s=18, cmap="viridis")
    fig.colorbar(points, ax=ax, label=f"estimated SOC (%), {model}")
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title("Fig. 4c: estimates at the site")
    return _save(fig, path)


def _table(frame: pd.DataFrame, highlight: str | None = None, column: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for _, row in frame.iterrows():
        cells = "".join(f"<td>{_cell(v)}</td>" for v in row)
        strong = ' class="chosen"' if highlight is not None and row[column] == highlight else ""
        body.append(f"<tr{strong}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "-" if not math.isfinite(value) else f"{value:.3f}"
    return html.escape(str(value))


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_report(run, *, echo=print) -> Path:
    """Write ``RUN/report.html`` and the figures of a finished study (see the module docstring)."""
    run = Path(run)
    if not (run / STUDY_FILE).is_file() or not (run / "metrics.csv").is_file():
        raise UserInputError(f"{run}: not a finished study run (expected {STUDY_FILE} and metrics.csv; run "
                             "`dtl study` to the end first)")
    study = read_study_file(run)
    config = replace(study["config"], resume=True, only=None)
    data = load_study_data(config, run)
    metrics = pd.read_csv(run / "metrics.csv")
    metrics["recommended_model"] = metrics.recommended_model.fillna("")
    predictions = pd.read_csv(run / "predictions.csv", dtype={"sample_id": str})
    recommended = metrics.loc[metrics.model == "recommended", "recommended_model"].item()
    figures = run / REPORT_DIR
    figures.mkdir(exist_ok=True)
    notes = list(study.get("notes", []))

    selected_rows = {}
    for library, source in (("global", data.library), ("country", data.country)):
        directory = stage_dir(run, f"rslocal:{library}")
        if source is not None and (directory / STAGE_FILE).is_file():
            selected_rows[library] = selections(directory, data.n_splits)[-1]
    k_rows = selected_rows.get("global", np.empty(0, dtype=np.int64))
    groups = {"library": data.library.y, "k selected": data.library.y[k_rows], "n local": data.local_y}
    table1 = [{"set": "global library", **soc_statistics(data.library.y)}]
    if data.country is not None:
        table1.append({"set": "country library", **soc_statistics(data.country.y)})
    table1 += [{"set": "k selected by RS-LOCAL (global)", **soc_statistics(groups["k selected"])},
               {"set": "n local (labelled)", **soc_statistics(data.local_y)},
               {"set": "local_test", **soc_statistics(predictions.observed)}]
    table1 = pd.DataFrame(table1)[["set", "K", *STATISTICS]]

    shown = [soc_densities(figures / "fig3a_soc_densities.png", groups)]
    reference_rows = data.library.training_rows()
    sets = {"library": data.library.spectra(reference_rows)}
    if data.country is not None:
        sets["country"] = data.country.spectra(data.country.training_rows())
    test = data.site.subset(ids=predictions.sample_id)
    sets |= {"k selected": data.library.spectra(k_rows), "n local": data.local_X,
             "local_test": SNV().fit_transform(test.spectra()) if len(predictions) else data.local_X[:0]}
    shown.append(pca_projection(figures / "fig3b_pca.png", sets["library"], sets))
    shown.append(delta_rmse_bars(figures / "fig4a_delta_rmse.png", metrics, recommended))
    names = [m for m in metrics.model if m != "recommended"]
    observed_vs_estimated(figures / "fig4b_observed_vs_estimated.png", predictions.observed,
                          {n: predictions[n] for n in names}, highlight=recommended,
                          title=f"Fig. 4b: observed vs estimated SOC on local_test (framed: {recommended})")
    shown.append(figures / "fig4b_observed_vs_estimated.png")
    shown.append(intervals_panel(figures / "fig4b_recommended_intervals.png", predictions, recommended, config.level))
    site = data.site
    if {"lat", "lon"} <= set(site.meta_fields) and np.isfinite(site.meta("lat")).all() and len(predictions):
        from dtl_dist.study.predict import load_any

        estimate = load_any(run / "models" / recommended).predict(site.spectra())
        shown.append(site_map(figures / "fig4c_site_map.png", site.meta("lon"), site.meta("lat"), estimate,
                              recommended))
    else:
        notes.append("Fig. 4c (map of the site) skipped: the site store has no coordinates (meta lat/lon)")
    traces = [stage_dir(run, f"rslocal:{lib}") / "trace.png" for lib in ("global", "country")]
    traces = [t for t in traces if t.is_file()]

    stages = []
    for record in sorted((run / "stages").glob(f"*/{STAGE_FILE}")):
        done = json.loads(record.read_text())
        stages.append({"stage": record.parent.name, "wall time (s)": round(done["seconds"], 1)})
    checksums = []
    for role, view in (("library", data.library.view), ("country library", data.country and data.country.view),
                       ("site", data.site)):
        for entry in [] if view is None else view.provenance:
            if "sha256" in entry:
                checksums.append({"input": role, "source": entry.get("source", ""), "sha256": entry["sha256"]})
    captions = {
        "fig3a_soc_densities.png": "Fig. 3a: SOC densities of the global library, the k samples RS-LOCAL selected "
                                   "for the site and the n labelled local samples.",
        "fig3b_pca.png": "Fig. 3b: PCA fitted on the global library's SNV spectra; country library, k selected and "
                         "the site's samples projected (PC1-PC2 left, PC1-PC3 right).",
        "fig4a_delta_rmse.png": "Fig. 4a: dRMSE = (RMSE_Local - RMSE_model) / RMSE_Local x 100 on local_test; "
                                "positive is better than the local 1D-CNN.",
        "fig4b_observed_vs_estimated.png": "Fig. 4b: estimated against observed SOC on local_test for every model; "
                                           "the dashed line is 1:1.",
        "fig4b_recommended_intervals.png": f"The recommended model ({recommended}) with its {config.level:.0%} "
                                           "prediction intervals (calibrated on the n labelled samples).",
        "fig4c_site_map.png": "Fig. 4c: the recommended model's estimates at the site's sample locations.",
    }
    row = metrics[metrics.model == recommended].iloc[0]
    ensembles = [m.name for m in MODELS if m.make == "ensemble" and m.name in set(metrics.model)]
    how = (f"the RMSE of its nested out-of-fold predictions of the {data.local_y.size} labelled local samples: for "
           f"each of the {data.n_outer} outer folds its members and weights were chosen on the other folds' "
           "out-of-fold predictions only, then combined that fold's" if recommended in ensembles else
           f"the RMSE of its out-of-fold predictions of the {data.local_y.size} labelled local samples, each made by "
           f"a model rebuilt without that sample's outer fold ({data.n_outer} folds; every choice inside a fold "
           "made on its training part)")
    choice = json.loads((run / CHOICE).read_text()) if (run / CHOICE).is_file() else None
    against = ""
    if choice is not None:  # the keys a study of an earlier version did not write have their defaults
        default = html.escape(choice.get("default", "stack"))
        against = (
            f" It was chosen by nested cv RMSE, the {default} standing unless a rival beats it by more than one "
            "standard error of their paired difference over the outer folds: picking the single model with the "
            f"lowest cv_rmse ({html.escape(choice.get('single_pick', 'the best single'))}) scores "
            f"{choice['single_pick_cv']:.3f} when the pick itself is made without the fold it predicts (the lowest "
            "of many cv_rmse is biased low by the pick), "
            + ", ".join(f"{html.escape(e)} {v:.3f}" for e, v in choice["ensembles_cv"].items())
            + "".join(f"; {html.escape(n)} minus {default} {-m['gain']:+.3f} (standard error {m['se']:.3f})"
                      for n, m in choice.get("margins", {}).items()) + ".")
        singles = [m.name for m in MODELS if m.make != "ensemble" and m.name in set(metrics.model)]
        if set(choice.get("candidates", singles)) != set(singles):
            against += (" The site lies outside the library (coverage check below), so only the models that use no "
                        f"library were candidates: {html.escape(', '.join(choice['candidates']))} and their "
                        "ensembles.")
    sentence = (f"The recommended model is <b>{html.escape(recommended)}</b>: cv_rmse "
                f"{row.cv_rmse:.3f} % SOC, {how}.{against} The "
                f"{len(predictions)} local_test samples were not read to choose it; on them it has RMSE "
                f"{row.rmse:.3f}, ME {row.me:+.3f}, Lin's CCC {row.ccc:.2f} and its {config.level:.0%} intervals "
                f"cover {row.coverage:.0%}.")
    members = "".join(
        f"<li><b>{html.escape(name)}</b>: "
        + ", ".join(f"{html.escape(m)} {w:.2f}" for m, w in stage_summary(run, name)["members"].items())
        + "</li>" for name in ensembles)
    ensemble_text = ("<p>Ensembles (rows of Table 3 like any model): <b>mean-1SE</b> is the plain mean of the models "
                     "whose cv_rmse is within one standard error (over the outer folds) of the lowest; <b>stack</b> "
                     "the combination with non-negative weights summing to one that fits the out-of-fold "
                     "predictions best. Their cv_rmse is nested: for each outer fold the members and weights are "
                     "chosen again on the other folds only, so the fold they are scored on never guides the "
                     "choice. Members and weights of the saved ensembles (chosen on all n):</p><ul>"
                     + members + "</ul>") if ensembles else ""
    table3 = metrics.copy()
    coverage = study.get("coverage")
    coverage_text = "" if coverage is None else (
        "<h2>Library coverage of the site (checked before the study)</h2>"
        f"<p>{html.escape(coverage['verdict'][0].upper() + coverage['verdict'][1:])}</p>"
        + _table(pd.DataFrame({"figure": [k for k in coverage if k != "verdict"],
                               "value": [str(v) for k, v in coverage.items() if k != "verdict"]})))
    body = [f"<h1>Study of {html.escape(Path(config.site).stem)}</h1>", f"<p>{sentence}</p>", coverage_text,
            "<h2>Table 1: SOC (%) of the data</h2>", _table(table1),
            "<h2>Table 3: test statistics of the models on local_test</h2>",
            "<p>rmse, me (estimated - observed), ccc (Lin), r2, rpiq and coverage on the N - n local_test samples; "
            "delta_rmse_pct against Local (paper eq. 1); cv_rmse on the n labelled samples (the choice); "
            "interval_width: mean width of the prediction intervals.</p>",
            _table(table3, recommended, "model"), ensemble_text,
            "<h2>Figures</h2>"]
    body += [_image(p, captions[p.name]) for p in shown]
    body += [_image(t, f"RS-LOCAL trace ({t.parent.name.split('_')[-1]} library): subset scores and the active "
                       "pool per iteration (final split).") for t in traces]
    body += ["<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>",
             "<h2>Provenance</h2>", f"<p>command: <code>{html.escape(study.get('command', ''))}</code><br>started: "
             f"{html.escape(study.get('started', ''))}</p>",
             "<h3>Options</h3>", _table(pd.DataFrame({"option": list(study["options"]),
                                                      "value": [str(v) for v in study["options"].values()]})),
             "<h3>Package versions</h3>", _table(pd.DataFrame({"package": list(_versions()),
                                                               "version": list(_versions().values())})),
             "<h3>Data checksums</h3>", _table(pd.DataFrame(checksums or [{"input": "-", "source": "-",
                                                                          "sha256": "-"}])),
             "<h3>Wall time per stage</h3>", _table(pd.DataFrame(stages))]
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>dtl-dist study report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;"
            "font-size:0.85em;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
            "th{background:#eee}tr.chosen{background:#fde7e7;font-weight:bold}figure{margin:1em 0}img{max-width:100%}"
            "figcaption{font-size:0.85em;color:#555}</style></head><body>" + "\n".join(body) + "</body></html>")
    write_text(run / "report.html", page)
    echo(f"wrote {run / 'report.html'} and {len(shown) + len(traces)} figures in {figures}")
    return run / "report.html"
