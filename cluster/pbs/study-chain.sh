#!/bin/bash
# The whole `dtl study` (paper 2.3.4) as a chain of three PBS jobs, each held until the previous one ended
# well (-W depend=afterok:ID; PBS deletes the held jobs when a dependency fails):
#   1. rslocal.pbs  (CPU nodes, Dask)  dtl study --only rslocal,baseline
#   2. ray.pbs      (GPU nodes, Ray)   dtl study --resume --only search,transfer --gpus-per-trial G (DTL_GPUS_PER_TRIAL,
#                                      default 0.25: four CNN tasks per GPU; DTL_CPUS_PER_TRIAL cores each)
#   3. study-evaluate.pbs (one node)   dtl study --resume: metrics.csv (+ dtl report)
# Run it on a login node (it only submits). Every job gets this shell's variables (qsub -V):
#   DTL_LIBRARY, DTL_SITE, DTL_OUT, DTL_STUDY_OPTS (identical for the three jobs), DTL_ACCOUNT,
#   DTL_CPU_SELECT (default select=2:ncpus=128:mpiprocs=8), DTL_GPU_SELECT (select=2:ncpus=64:ngpus=8:mpiprocs=1),
#   DTL_CPU_QUEUE, DTL_GPU_QUEUE, DTL_QSUB_OPTS (more qsub options for every job).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export DTL_CLUSTER_DIR=${DTL_CLUSTER_DIR:-$(dirname "$here")}
export DTL_OUT=${DTL_OUT:-$PWD/dtl/study}
: "${DTL_LIBRARY:?DTL_LIBRARY: the library store on the shared file system}"
: "${DTL_SITE:?DTL_SITE: the site store on the shared file system}"
export DTL_LIBRARY DTL_SITE
account=(); [ -n "${DTL_ACCOUNT:-}" ] && account=(-A "$DTL_ACCOUNT")
cpu_queue=(); [ -n "${DTL_CPU_QUEUE:-}" ] && cpu_queue=(-q "$DTL_CPU_QUEUE")
gpu_queue=(); [ -n "${DTL_GPU_QUEUE:-}" ] && gpu_queue=(-q "$DTL_GPU_QUEUE")
# shellcheck disable=SC2206  # a list of options
extra=(${DTL_QSUB_OPTS:-})

job1=$(qsub -V -v DTL_MODE=study "${account[@]}" "${cpu_queue[@]}" "${extra[@]}" \
  -l "${DTL_CPU_SELECT:-select=2:ncpus=128:mpiprocs=8}" "$here/rslocal.pbs")
job2=$(qsub -V -v DTL_MODE=study "${account[@]}" "${gpu_queue[@]}" "${extra[@]}" -W "depend=afterok:$job1" \
  -l "${DTL_GPU_SELECT:-select=2:ncpus=64:ngpus=8:mpiprocs=1}" "$here/ray.pbs")
job3=$(qsub -V "${account[@]}" "${cpu_queue[@]}" "${extra[@]}" -W "depend=afterok:$job2" "$here/study-evaluate.pbs")
echo "study $DTL_OUT: job $job1 (RS-LOCAL + baselines), $job2 (searches + transfers, after $job1), $job3 (metrics, after $job2)"
