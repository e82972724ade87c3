#!/bin/bash
# The whole `dtl study` (paper 2.3.4) as a chain of three SLURM jobs, each starting when the previous one
# ended well (--dependency=afterok; --kill-on-invalid-dep cancels the rest when one fails):
#   1. rslocal.sbatch  (CPU nodes, Dask)  dtl study --only rslocal,baseline
#   2. ray.sbatch      (GPU nodes, Ray)   dtl study --resume --only search,transfer --gpus-per-trial G (DTL_GPUS_PER_TRIAL,
#                                         default 0.25: four CNN tasks per GPU; DTL_CPUS_PER_TRIAL cores each)
#   3. study-evaluate.sbatch (one node)   dtl study --resume: metrics.csv (+ dtl report)
# Run it on a login node (it only submits). Every job reads the same variables (exported with --export=ALL):
#   DTL_LIBRARY, DTL_SITE   stores on the shared file system (/scratch)
#   DTL_OUT                 the study's run directory (default /scratch/.../dtl/study)
#   DTL_STUDY_OPTS          dtl study options, identical for the three jobs (e.g. "--country SE --budget paper")
#   DTL_ACCOUNT             project to charge (sbatch --account); DTL_GPU_ACCOUNT for job 2 (Setonix: PROJECT-gpu)
#   DTL_CPU_NODES, DTL_GPU_NODES, DTL_CPU_PARTITION, DTL_GPU_PARTITION, DTL_CPU_TIME, DTL_GPU_TIME
#   DTL_SBATCH_OPTS         more sbatch options for every job
# Prints the three job ids; watch them with `squeue --me`, results in $DTL_OUT.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export DTL_CLUSTER_DIR=${DTL_CLUSTER_DIR:-$(dirname "$here")}
export DTL_OUT=${DTL_OUT:-${MYSCRATCH:-$PWD}/dtl/study}
: "${DTL_LIBRARY:?DTL_LIBRARY: the library store on /scratch}"
: "${DTL_SITE:?DTL_SITE: the site store on /scratch}"
export DTL_LIBRARY DTL_SITE
account=(); [ -n "${DTL_ACCOUNT:-}" ] && account=(--account="$DTL_ACCOUNT")
gpu_account=(); [ -n "${DTL_GPU_ACCOUNT:-${DTL_ACCOUNT:-}}" ] && gpu_account=(--account="${DTL_GPU_ACCOUNT:-$DTL_ACCOUNT}")
# shellcheck disable=SC2206  # a list of options
extra=(${DTL_SBATCH_OPTS:-})
common=(--parsable --kill-on-invalid-dep=yes "${extra[@]}")

job1=$(sbatch "${common[@]}" "${account[@]}" --export=ALL,DTL_MODE=study --nodes="${DTL_CPU_NODES:-2}" \
  --partition="${DTL_CPU_PARTITION:-work}" --time="${DTL_CPU_TIME:-01:00:00}" "$here/rslocal.sbatch")
job2=$(sbatch "${common[@]}" "${gpu_account[@]}" --export=ALL,DTL_MODE=study --nodes="${DTL_GPU_NODES:-2}" \
  --partition="${DTL_GPU_PARTITION:-gpu}" --time="${DTL_GPU_TIME:-04:00:00}" --dependency="afterok:$job1" \
  "$here/ray.sbatch")
job3=$(sbatch "${common[@]}" "${account[@]}" --export=ALL --partition="${DTL_CPU_PARTITION:-work}" \
  --dependency="afterok:$job2" "$here/study-evaluate.sbatch")
echo "study $DTL_OUT: job $job1 (RS-LOCAL + baselines), $job2 (searches + transfers, after $job1), $job3 (metrics, after $job2)"
