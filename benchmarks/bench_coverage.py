"""bench_coverage: the library-coverage check `dtl study` prints (dtl_dist/study/coverage.py) for the four
LimeSoDa vis-NIR sites with bench_study's libraries, and for the two synthetic cases (benchmarks/synthetic_cases.py).

Usage: DTL_DATA=... python benchmarks/bench_coverage.py [--out benchmarks/out/coverage]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from dtl_dist.study.config import StudyConfig  # noqa: E402
from dtl_dist.study.coverage import site_coverage  # noqa: E402
from dtl_dist.study.data import load_study_data  # noqa: E402
from dtl_dist.study.main_job import MainJob, stores as main_job_stores  # noqa: E402
from synthetic_cases import CASES, stores as synthetic_stores  # noqa: E402

SITES = ("UL.120", "SL.125", "CV.98", "SC.93")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/out/coverage")
    args = parser.parse_args()
    out = Path(args.out)
    print(f"load {os.getloadavg()[0]:.1f}")
    print("| site | library | share inside | neighbour ratio | n_like (k = 100) | SOC share | verdict | s |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for site in (*SITES, *CASES):
        start = time.perf_counter()
        if site in CASES:
            library, site_store = synthetic_stores(site, out / "synthetic_data")
        else:
            library, site_store = main_job_stores(MainJob(out=str(out / site), site=site,
                                                          data_dir=os.environ.get("DTL_DATA")), lambda line: None)
        config = StudyConfig(library=str(library), site=str(site_store), out=str(out / site / "study"), workers=0)
        data = load_study_data(config, out / site / "study")
        c = site_coverage(data, config.k)
        print(f"| {site} | {data.library.size} | {c['share_inside']:.0%} | {c['neighbour_ratio']:.2f} | {c['n_like']} | "
              f"{c['soc_share']:.0%} | {c['verdict'].split(':')[0]} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
