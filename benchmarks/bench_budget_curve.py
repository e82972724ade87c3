"""bench_budget_curve: what a larger 1D-CNN search budget gives (issue 16, item 4), replayed from a search's trials.

bench_small_data's 100-trial variant searches the study's ``Local`` model on one LimeSoDa site (n = 30 by
Kennard-Stone, 10 inner folds, 5 outer folds, the known-good small CNNs first, then seeded random draws from the
default space). This script reads the trial folder such a search wrote (``trial_NNNNN/outcome.json`` and the
final split's model in ``checkpoint/model``, read from TRIALS_DIR wherever the search ran) and replays the search
stopped after its first T trials, T = 4 (the quick budget: the starters), 8, 16, ... and all that finished. For each T it prints the nested cv RMSE (each
outer split's choice among the T trials predicts its held-out labelled samples) and the test RMSE on local_test of
the model the search would keep (the lowest inner RMSE on all n), beside local PLS.

Usage: python benchmarks/bench_budget_curve.py TRIALS_DIR [--site UL.120]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from dtl_dist.metrics import rmse
from dtl_dist.nn.model_dir import load_model
from dtl_dist.nn.search import SearchResult
from dtl_dist.study.config import StudyConfig
from dtl_dist.study.data import load_study_data
from dtl_dist.study.designs import assemble, local_design

sys.path.insert(0, str(Path(__file__).parent))
from bench_small_data import site_stores  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trials", type=Path)
    parser.add_argument("--site", default="UL.120")
    args = parser.parse_args()
    outcomes = [json.loads(p.read_text()) for p in sorted(args.trials.glob("trial_*/outcome.json"))]
    with tempfile.TemporaryDirectory() as tmp:  # the same split as bench_small_data's (seed 0, n = 30)
        tmp = Path(tmp)
        site, library = site_stores(args.site, tmp)
        config = StudyConfig(library=str(library), site=str(site), out=str(tmp / "run"), workers=0, inner_folds=10)
        data = load_study_data(config, tmp / "run")
        design = local_design(data)
        observed = data.test_y()
        print(f"{args.site}: {len(outcomes)} trials finished; n = {data.local_y.size}, local_test {observed.size}")
        print("| trials | nested cv RMSE | chosen (inner RMSE on all n) | test RMSE |")
        print("|---:|---:|---|---:|")
        for t in sorted({*[4, 8, 16, 32, 64], len(outcomes)}):
            if t > len(outcomes):
                continue
            result = SearchResult.from_outcomes(outcomes[:t])
            _, predictions = result.per_split()
            cv = assemble(data, design, predictions)
            best = result.best
            test = load_model(args.trials / best.trial_id / "checkpoint" / "model").predict(data.test_absorbance)
            print(f"| {t} | {rmse(data.local_y, cv):.3f} | {best.trial_id} ({best.rmse:.3f}) | "
                  f"{rmse(observed, test):.3f} |")


if __name__ == "__main__":
    main()
