#!/usr/bin/env bash
# first_hour: time each step of a user's first hour (README "Your first hour") on this machine: a synthetic
# OSSL v1.2 all-table of 100,000 layers (the stand-in for the download) -> the Swedish LUCAS layers as the library
# -> a LimeSoDa site (UL.120, Uppsala) -> the study (quick budget) -> the report. Prints one line per step with its
# wall time and the load average at its end.
# Usage: benchmarks/first_hour.sh [WORKDIR]   (from the repository root, with .venv built)
set -euo pipefail
WORK=${1:-benchmarks/out/first_hour}
DTL=.venv/bin/dtl
mkdir -p "$WORK"
step() {  # step NAME COMMAND...
  local name=$1; shift
  local start=$(date +%s.%N)
  "$@" > "$WORK/$name.log" 2>&1
  local end=$(date +%s.%N)
  printf '| %s | %.0f s | load %s |\n' "$name" "$(echo "$end - $start" | bc)" "$(cut -d' ' -f1 /proc/loadavg)"
}
echo "start $(date -u +%H:%M) UTC, $(nproc) cores"
step write_ossl_table .venv/bin/python -c "from dtl_dist.library.ossl_synthetic import write_ossl; \
write_ossl('$WORK/ossl', 100_000)"
step ingest_ossl_lucas_sweden $DTL ingest --format ossl "$WORK/ossl/ossl_all_L0_v1.2.csv.gz" \
     --where dataset=LUCAS.SSL --where country=SWE --grid 420:2500:10 --out "$WORK/lucas_swe.zarr" --overwrite -q
step ingest_site $DTL ingest UL.120 --grid 420:2500:10 --out "$WORK/ul120.zarr" --overwrite --quiet
step study $DTL study --library "$WORK/lucas_swe.zarr" --site "$WORK/ul120.zarr" --out "$WORK/run"
step report $DTL report "$WORK/run"
cat "$WORK/ingest_ossl_lucas_sweden.log"; tail -15 "$WORK/study.log"; tail -2 "$WORK/report.log"
