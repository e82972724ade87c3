# shellcheck shell=bash
# Shared by the job scripts of cluster/slurm and cluster/pbs (sourced, not run): fail fast with the reason,
# activate the environment, check stores and GPUs, start and stop a Dask (dask-mpi) or Ray cluster over the
# job's nodes. A job script defines, before sourcing this file:
#   DTL_NODES      array of the job's host names (first = where the batch script runs)
#   on_node        function: on_node HOST CMD...   runs CMD as one task on HOST (srun -w / mpiexec --hosts)
#   on_each_node   function: on_each_node CMD...   runs CMD once on every node of the job
#   on_workers     function (RS-LOCAL jobs): on_workers CMD...  runs CMD as DTL_WORKERS_PER_NODE tasks per node
# Every setting is an environment variable with a default (cluster/README.md lists them).

: "${DTL_VENV:=${MYSOFTWARE:-$HOME}/dtl-dist/.venv}"   # virtual environment with dtl installed
: "${DTL_MODULES:=}"                 # modules to load first, e.g. "python/3.11.6 cray-mpich rocm/5.7.3"
: "${DTL_WAIT_S:=300}"               # seconds a scheduler file, Dask workers or Ray nodes may take to appear
: "${DTL_INTERFACE:=hsn0}"           # network interface the nodes share (Setonix: hsn0; InfiniBand: ib0)
: "${DTL_DASHBOARD:=no}"             # yes: Dask/Ray dashboards on the first node (reach them through an SSH tunnel)

DTL_BACKGROUND=()                    # launcher processes of background steps, ended on exit

dtl_fail() {  # MESSAGE: the reason in the job log, exit code 2 (bad input or a cluster that did not come up)
  echo "error: $*" >&2
  exit 2
}

dtl_activate() {  # load modules, activate the venv, one thread per task for every numeric library
  if [ -n "$DTL_MODULES" ]; then
    # shellcheck disable=SC2086  # a list of module names
    module load $DTL_MODULES || dtl_fail "module load $DTL_MODULES failed (DTL_MODULES)"
  fi
  [ -f "$DTL_VENV/bin/activate" ] || dtl_fail "DTL_VENV=$DTL_VENV: no virtual environment there (bin/activate)"
  # shellcheck disable=SC1091  # the user's venv
  source "$DTL_VENV/bin/activate"
  command -v dtl >/dev/null || dtl_fail "dtl is not installed in $DTL_VENV (pip install dtl-dist there)"
  export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
  export DASK_LOGGING__DISTRIBUTED=warning RAY_USAGE_STATS_ENABLED=0 RAY_AIR_NEW_OUTPUT=0
}

dtl_need_store() {  # PATH WHAT: a Zarr store must be readable here, on a compute node
  [ -n "$1" ] || dtl_fail "no $2 store given (set the variable naming it)"
  [ -f "$1/zarr.json" ] || dtl_fail "$2 store $1 not found on $(hostname) (a Zarr folder with zarr.json): stage it to the shared file system (/scratch) first"
}

dtl_need_gpus() {  # PER_TRIAL PER_NODE: a trial cannot use more GPUs than a node has
  awk -v want="$1" -v have="$2" 'BEGIN { exit !(want + 0 >= 0 && want + 0 <= have + 0) }' \
    || dtl_fail "DTL_GPUS_PER_TRIAL=$1: a node of this job has $2 GPU(s); ask for at most $2 per trial (a fraction shares a GPU: 0.25 = four trials per GPU)"
}

dtl_cleanup() {  # on exit, however the script ends: stop Ray on every node, end the background steps
  local code=$?
  trap - EXIT
  if [ -n "${DTL_RAY_ADDRESS:-}" ]; then
    on_each_node ray stop || true
  fi
  if [ ${#DTL_BACKGROUND[@]} -gt 0 ]; then
    echo "dtl: ending the cluster's background steps (the launcher may report their termination: expected)"
    kill "${DTL_BACKGROUND[@]}" 2>/dev/null || true
    wait "${DTL_BACKGROUND[@]}" 2>/dev/null || true
  fi
  exit "$code"
}
trap dtl_cleanup EXIT

dtl_layout() {  # CPUS WORKERS THREADS: check the RS-LOCAL layout of a node (worker processes x threads <= CPUs)
  if [ "$2" -lt 1 ] || [ "$3" -lt 1 ] || [ $(( $2 * $3 )) -gt "$1" ]; then
    dtl_fail "DTL_WORKERS_PER_NODE=$2 x DTL_THREADS=$3: a node of this job has $1 CPU(s)"
  fi
}

dtl_dask_start() {  # THREADS: dask-mpi workers (on_workers) with THREADS threads each; rank 0 also runs the scheduler
  : "${DTL_SCHEDULER_FILE:?}"
  rm -f "$DTL_SCHEDULER_FILE"
  local dashboard=(--no-dashboard)
  [ "$DTL_DASHBOARD" = yes ] && dashboard=(--dashboard --dashboard-address :8787)
  on_workers dask-mpi --scheduler-file "$DTL_SCHEDULER_FILE" --scheduler-port 0 --interface "$DTL_INTERFACE" \
    --protocol "${DTL_DASK_PROTOCOL:-tcp}" \
    --nthreads "$1" --worker-class distributed.Worker --inclusive-workers "${dashboard[@]}" &
  DTL_BACKGROUND+=($!)
  dtl wait --scheduler-file "$DTL_SCHEDULER_FILE" --workers $(( ${#DTL_NODES[@]} * DTL_WORKERS_PER_NODE )) \
    --timeout "$DTL_WAIT_S"
  [ "$DTL_DASHBOARD" = yes ] && echo "Dask dashboard: ssh -N -L 8787:${DTL_NODES[0]}:8787 LOGIN_NODE, then http://localhost:8787"
  return 0
}

dtl_ray_start() {  # CPUS GPUS: a Ray head on the first node and a Ray worker on every other; sets DTL_RAY_ADDRESS
  local head=${DTL_NODES[0]} head_ip node
  head_ip=$(on_node "$head" hostname --ip-address | awk '{print $1}')
  [ -n "$head_ip" ] || dtl_fail "could not read the address of $head (hostname --ip-address)"
  local dashboard=(--include-dashboard=false)
  [ "$DTL_DASHBOARD" = yes ] && dashboard=(--include-dashboard=true --dashboard-host="$head_ip" --dashboard-port=8265)
  DTL_RAY_ADDRESS="$head_ip:${DTL_RAY_PORT:-6379}"
  on_node "$head" ray start --head --node-ip-address="$head_ip" --port="${DTL_RAY_PORT:-6379}" \
    --num-cpus="$1" --num-gpus="$2" "${dashboard[@]}" --disable-usage-stats --block &
  DTL_BACKGROUND+=($!)
  dtl wait --ray-address "$DTL_RAY_ADDRESS" --nodes 1 --timeout "$DTL_WAIT_S"
  for node in "${DTL_NODES[@]:1}"; do
    on_node "$node" ray start --address="$DTL_RAY_ADDRESS" --num-cpus="$1" --num-gpus="$2" --block &
    DTL_BACKGROUND+=($!)
  done
  dtl wait --ray-address "$DTL_RAY_ADDRESS" --nodes "${#DTL_NODES[@]}" --timeout "$DTL_WAIT_S"
  [ "$DTL_DASHBOARD" = yes ] && echo "Ray dashboard: ssh -N -L 8265:$head_ip:8265 LOGIN_NODE, then http://localhost:8265"
  return 0
}

dtl_study_resume() {  # OUT: --resume when the run directory already holds a study (a resubmitted job)
  [ -f "$1/study.json" ] && echo --resume
  return 0
}
