"""bench_study: the study (``dtl study``) on the four LimeSoDa vis-NIR sites, beside the paper's Table 3.

For each site: the global library is the other three LimeSoDa vis-NIR sites plus the Geeves NSW library when
DTL_DATA holds it; the country library is the site's country within it (SE for UL.120 and SL.125; CV.98 (CH)
and SC.93 (BR) have none in this library). n = 30 by Kennard-Stone, the rest is local_test. Prints, per site,
the wall time, every model's test RMSE, ME, Lin's CCC, dRMSE against the local 1D-CNN and cv_rmse, the model
recommended by cv_rmse, and the checks of the study issue: the local 1D-CNN against local PLS (test RMSE ratio)
and the spread of every CNN's test predictions against the observed one; then the mean dRMSE of the
recommended models.

Usage: python benchmarks/bench_study.py [--sites UL.120 SL.125 CV.98 SC.93] [--budget quick|paper]
       [--trials N] [--out benchmarks/out/study]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

from dtl_dist.study.main_job import MainJob, run_main_job  # noqa: E402

COUNTRY = {"UL.120": "SE", "SL.125": "SE", "CV.98": None, "SC.93": None}
CNNS = ("Local", "Global", "Country", "DTL-I_g", "DTL-I_c", "DTL-R_g", "DTL-R_c", "DTL-IR_g", "DTL-IR_c")


def site_table(site: str, out: Path, seconds: float) -> dict:
    metrics = pd.read_csv(out / "study" / "metrics.csv", keep_default_na=False).set_index("model")
    predictions = pd.read_csv(out / "study" / "predictions.csv")
    observed_sd = predictions.observed.std(ddof=0)
    print(f"\n### {site} ({seconds / 60:.1f} min)\n")
    print("| model | test RMSE | ME | CCC | dRMSE % | cv_rmse | sd(est) / sd(obs) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in metrics.iterrows():
        if name == "recommended":
            continue
        spread = predictions[name].std(ddof=0) / observed_sd
        print(f"| {name} | {row.rmse:.3f} | {row.me:+.3f} | {row.ccc:.2f} | {row.delta_rmse_pct:+.1f} | "
              f"{row.cv_rmse:.3f} | {spread:.2f} |")
    chosen = metrics.loc["recommended", "recommended_model"]
    ratio = metrics.loc["Local", "rmse"] / metrics.loc["local-PLS", "rmse"]
    low = [n for n in CNNS if n in predictions and predictions[n].std(ddof=0) < 0.5 * observed_sd]
    print(f"\nrecommended (lowest cv_rmse): **{chosen}**, test RMSE {metrics.loc[chosen, 'rmse']:.3f}, dRMSE "
          f"{metrics.loc[chosen, 'delta_rmse_pct']:+.1f} % against Local; Local / local-PLS test RMSE {ratio:.3f}; "
          f"recommended / local-PLS {metrics.loc[chosen, 'rmse'] / metrics.loc['local-PLS', 'rmse']:.3f}; CNNs "
          f"with sd(est) < sd(obs) / 2: {', '.join(low) or 'none'}")
    return {"site": site, "recommended": chosen, "delta": metrics.loc[chosen, "delta_rmse_pct"],
            "vs_pls": metrics.loc[chosen, "rmse"] / metrics.loc["local-PLS", "rmse"], "local_vs_pls": ratio,
            "minutes": seconds / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", nargs="+", default=list(COUNTRY))
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--trials", type=int)
    parser.add_argument("--out", default="benchmarks/out/study")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.2f}; DTL_DATA={'set' if os.environ.get('DTL_DATA') else 'unset'}; budget "
          f"{args.budget}, trials {args.trials or 'budget default'}")
    rows = []
    for site in args.sites:
        out = Path(args.out) / f"{site}_{args.budget}{'' if args.trials is None else args.trials}"
        start = time.perf_counter()
        run_main_job(MainJob(out=str(out), site=site, country=COUNTRY[site], budget=args.budget,
                             trials=args.trials, data_dir=os.environ.get("DTL_DATA")), echo=lambda line: None)
        rows.append(site_table(site, out, time.perf_counter() - start))
    summary = pd.DataFrame(rows)
    print("\n| site | recommended | dRMSE % vs Local | recommended / local-PLS | Local / local-PLS | minutes |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['site']} | {r['recommended']} | {r['delta']:+.1f} | {r['vs_pls']:.3f} | {r['local_vs_pls']:.3f} "
              f"| {r['minutes']:.1f} |")
    print(f"| mean | | {np.mean(summary.delta):+.1f} | {np.mean(summary.vs_pls):.3f} | "
          f"{np.mean(summary.local_vs_pls):.3f} | {np.sum(summary.minutes):.1f} total |")


if __name__ == "__main__":
    main()
