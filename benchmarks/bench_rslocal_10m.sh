#!/usr/bin/env bash
# bench_rslocal_10m (issue 15): a 10M-sample synthetic library (8.4 GB of float32 spectra in Zarr) localised by
# the SLURM job of cluster/ (cluster/slurm/rslocal.sbatch: dask-mpi workers, the driver in the batch script) on
# the fake cluster of cluster/local: 2 nodes x 1 worker process x 1 thread. The job runs in parts of PART_MIN
# minutes (its time limit); each part resumes from the search's checkpoint. While a part runs, the RSS of every
# process of the job is sampled every 5 s. Prints the job log's progress lines and the peaks per process.
#
# Usage: benchmarks/bench_rslocal_10m.sh [DIR]   (PARTS=1 PART_MIN=15 N=10000000; DIR default /tmp/dtl-10m)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-/tmp/dtl-10m}
parts=${PARTS:-1} minutes=${PART_MIN:-15} n=${N:-10000000}
mkdir -p "$dir"
export PATH="$root/cluster/local/bin:$root/.venv/bin:$PATH" DTL_VENV="$root/.venv" DTL_CLUSTER_DIR="$root/cluster"
export DTL_INTERFACE=lo DTL_WAIT_S=600 DTL_LOCAL_CLUSTER="$dir/cluster" DTL_LOCAL_NODES=2 DTL_LOCAL_CPUS_PER_NODE=1
export DTL_LIBRARY="$dir/lib.zarr" DTL_SITE="$dir/site.zarr" DTL_OUT="$dir/rs" DTL_RSLOCAL_OPTS="--k 100"
if [ ! -d "$DTL_LIBRARY" ]; then
  start=$(date +%s)
  dtl synth --n "$n" --out "$DTL_LIBRARY" --site-n 80 --site-out "$DTL_SITE" --quiet
  dtl select-local "$DTL_SITE" --n 30
  echo "library of $n samples written in $(( $(date +%s) - start )) s: $(du -sh "$DTL_LIBRARY" | cut -f1)"
fi
for part in $(seq "$parts"); do
  job=$(cd "$dir" && sbatch --parsable --nodes=2 --ntasks-per-node=1 --cpus-per-task=1 --time="$minutes:00" \
        "$root/cluster/slurm/rslocal.sbatch")
  echo "part $part: job $job, $(date -Is)"
  : > "$dir/rss-$job.txt"
  record() { python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ''))" \
             "$DTL_LOCAL_CLUSTER/jobs/$job.json" "$1"; }
  until [[ "$(record state)" =~ ^(COMPLETED|FAILED|CANCELLED|TIMEOUT)$ ]]; do
    ps -eo pid=,rss=,args= | grep -E "dask-mpi|dtl rslocal" | grep -v grep >> "$dir/rss-$job.txt" || true
    sleep 5
  done
  echo "part $part: job $job $(record state), $(date -Is)"
  log=$(record output)
  grep -E "rslocal: iteration|n_selected|error|dtl-rslocal" "$log" || true
  python3 - "$dir/rss-$job.txt" <<'EOF'
import collections, sys
peak, what = collections.defaultdict(int), {}
for line in open(sys.argv[1]):
    pid, rss, args = line.split(None, 2)
    peak[pid] = max(peak[pid], int(rss))
    what[pid] = "driver (dtl rslocal)" if "dtl rslocal" in args else "dask-mpi rank"
for pid in sorted(peak, key=peak.get, reverse=True):
    print(f"peak RSS {peak[pid] / 2**20:.2f} GB  pid {pid}  {what[pid]}")
EOF
  [ -f "$DTL_OUT/selected.csv" ] && break
done
