#!/usr/bin/env bash
# first_hour: time each step of a user's first hour (README "Your first hour") on this machine:
# an OSSL-layout all-table (synthetic, bench_ossl's 100,000 rows) -> one country's library -> a LimeSoDa site ->
# the study (quick budget) -> the report. Prints one line per step with its wall time and the load average.
# Usage: benchmarks/first_hour.sh [WORKDIR]   (run from the repository root, .venv built)
set -euo pipefail
WORK=${1:-benchmarks/out/first_hour}
TABLE=benchmarks/out/ossl_100000/ossl_all_L0_v1.2.csv.gz
DTL=.venv/bin/dtl
mkdir -p "$WORK"
step() {  # step NAME COMMAND...
  local name=$1; shift
  local start=$(date +%s.%N)
  "$@" > "$WORK/$name.log" 2>&1
  local end=$(date +%s.%N)
  printf '| %s | %.0f s | load %s |\n' "$name" "$(echo "$end - $start" | bc)" "$(cut -d' ' -f1 /proc/loadavg)"
}
[ -f "$TABLE" ] || step write_ossl_table .venv/bin/python benchmarks/bench_ossl.py --n 100000
step ingest_ossl_country $DTL ingest --format ossl "$TABLE" --where country=SWE --grid 420:2500:10 \
     --out "$WORK/ossl_swe.zarr" --overwrite --quiet
step ingest_site $DTL ingest UL.120 --grid 420:2500:10 --out "$WORK/ul120.zarr" --overwrite --quiet
step study $DTL study --library "$WORK/ossl_swe.zarr" --site "$WORK/ul120.zarr" --country SWE --out "$WORK/run"
step report $DTL report "$WORK/run"
tail -3 "$WORK/ingest_ossl_country.log"; grep -i "recommended" "$WORK/study.log" | tail -2 || true
