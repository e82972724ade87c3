#!/bin/bash
# gpu_check: the study's GPU paths on one GPU node in one run under 8 minutes (issue 19): torch/CUDA versions,
# the batched PLS kernel on CUDA against the compiled CPU kernel (fits/s, largest difference), a 40-trial
# 10-fold search of the study's small 1D-CNNs at 0.25 and 0.125 GPUs per trial (trials per GPU-hour, GPU
# utilisation from nvidia-smi) and the study's search stages end to end. Figures go to one JSON file.
#
#   benchmarks/gpu_check.sh [--out gpu_check.json]      on a GPU node (e.g. 1 GPU, 16 cores)
#   benchmarks/gpu_check.sh --dry-run --out /tmp/x.json  the same code on the CPU at tiny sizes (CI runs it)
#
# DTL_PYTHON: the interpreter with dtl-dist installed (default: the checkout's .venv, else python3).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${DTL_PYTHON:-$here/../.venv/bin/python}
[ -x "$python" ] || python=python3
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
case " $* " in
  *" --dry-run "*) exec "$python" "$here/gpu_check.py" "$@" ;;   # CPU, tiny sizes: no device time to guard
esac
# 470 s: on a GPU the whole check stays under 8 minutes even when a part runs long (it then fails, with its output)
exec timeout 470 "$python" "$here/gpu_check.py" "$@"
