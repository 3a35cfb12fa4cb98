#!/usr/bin/env bash
# The GPU bare-segmenter benchmark on a machine without TensorFlow and without network.
#
#   bench/gpu/run_gpu_bench.sh [--model models/road_unet_camvid.onnx] [--quick] [--json out/bench/gpu_bench.json]
#
# 1. installs the wheels carried in bench/gpu/.whl/ ($ROAD_SEG_GPU_WHEELS; see fetch_wheels.sh) into a private folder
#    ($ROAD_SEG_GPU_SITE, default $HOME/.cache/road_seg_gpu_site) that goes first on PYTHONPATH; nothing
#    else is installed or changed;
# 2. runs bench/gpu/gpu_bench.py with the arguments given (ONNX Runtime on the CUDA provider,
#    Keras 3 on JAX and on torch), which prints the table and writes JSON.
# Without a GPU (or without the wheels) it still runs, on the CPU, and says so.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-python3}
SITE=${ROAD_SEG_GPU_SITE:-$HOME/.cache/road_seg_gpu_site}
WHEELS=${ROAD_SEG_GPU_WHEELS:-$HERE/.whl}
cd "$REPO"

echo "python: $("$PY" --version 2>&1) at $(command -v "$PY")"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
  || echo "nvidia-smi: no NVIDIA GPU visible (results will be CPU FALLBACK)"

shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if ((${#wheels[@]})); then
  echo "installing ${#wheels[@]} carried wheel(s) into $SITE"
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}"; then
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "WARNING: the carried wheels did not install (wrong Python version? they are for CPython 3.12);"
    echo "         going on with what is installed"
  fi
else
  echo "no wheels in $WHEELS (run bench/gpu/fetch_wheels.sh where there is network): using what is installed"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# JAX takes 75% of the GPU's memory at start by default; the engines run one after the other anyway
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
"$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" 2>&1 \
  || echo "onnxruntime is not importable"
exec "$PY" "$HERE/gpu_bench.py" "$@"
