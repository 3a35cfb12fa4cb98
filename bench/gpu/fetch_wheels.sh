#!/usr/bin/env bash
# Download the wheels the GPU benchmark installs on a machine without network (see README.md).
#
#   bench/gpu/fetch_wheels.sh            # keras + its missing deps (about 3 MB) and onnxruntime-gpu (about 256 MB)
#   bench/gpu/fetch_wheels.sh --no-ort   # only the Keras wheels (for transfers capped below 256 MB)
#
# Targets CPython 3.12 on manylinux x86_64 (the GPU image: PyTorch, JAX, CUDA 13, cuDNN 9, numpy,
# opencv, h5py, absl-py, rich, ml-dtypes, protobuf, flatbuffers already installed). Wheels land in
# bench/gpu/.whl/ (git-ignored). --no-deps on purpose: the GPU image already has every other
# requirement, and a second numpy or protobuf would shadow the image's own.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEST="$HERE/.whl"
PY=${PYTHON:-python3}
KERAS_VERSION=${KERAS_VERSION:-3.15.1}        # the project's pin (requirements.txt)
NAMEX_VERSION=${NAMEX_VERSION:-0.1.0}         # keras needs it; not in the GPU image
OPTREE_VERSION=${OPTREE_VERSION:-0.20.0}      # keras needs it; not in the GPU image
ORT_GPU_VERSION=${ORT_GPU_VERSION:-1.31.1}    # CUDA 13 / cuDNN 9 build, matches the image's CUDA 13

pkgs=("keras==$KERAS_VERSION" "namex==$NAMEX_VERSION" "optree==$OPTREE_VERSION")
if [[ "${1:-}" != "--no-ort" ]]; then
  pkgs+=("onnxruntime-gpu==$ORT_GPU_VERSION")
fi
mkdir -p "$DEST"
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$DEST" "${pkgs[@]}"
echo "wheels in $DEST:"
ls -l "$DEST"
