"""The colcon-built install the launch tests run from (``build/colcon/install``), and an environment that finds it.

``make test`` builds it first (``make ros-build``) and sets ``ROAD_SEG_COLCON_BUILT=1``; run alone, a
test builds it once per pytest run (a ``--symlink-install``: the installed package is this checkout's code).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from road_seg_perception.core.segmenter import default_model_path

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build" / "colcon"
INSTALL = BUILD / "install"
SHARE = INSTALL / "road_seg_perception" / "share" / "road_seg_perception"
#: the node's default model on this machine: the INT8 copy, or the float one on an x86-64 CPU without VNNI
SHIPPED_MODEL = REPO / "models" / default_model_path().name
_built = False


def colcon_command() -> list[str]:
    """``colcon build`` of this package alone into ``build/colcon`` (what ``make ros-build`` runs)."""
    colcon = shutil.which("colcon", path=str(Path(sys.executable).parent)) or shutil.which("colcon")
    if colcon is None:
        raise RuntimeError("colcon is not installed: run make setup (colcon-common-extensions)")
    return [colcon, "--log-base", str(BUILD / "log"), "build", "--paths", str(REPO), "--build-base",
            str(BUILD / "build"), "--install-base", str(INSTALL), "--symlink-install"]


def ensure_built() -> None:
    """Build the install tree unless this pytest run or ``make`` already did."""
    global _built
    if _built or (os.environ.get("ROAD_SEG_COLCON_BUILT") == "1" and (INSTALL / "local_setup.sh").is_file()):
        _built = True
        return
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    r = subprocess.run(colcon_command(), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"colcon build failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    _built = True


def require_launch_stack() -> None:
    """Fail (not skip) with the fix when ``launch``/``launch_ros``/``ros2launch`` are missing."""
    try:
        import launch_ros.actions  # noqa: F401
        import launch_testing  # noqa: F401
        import ros2launch  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"the ROS 2 launch stack is not installed ({e}): run make setup, or source ROS 2") from e


def installed_env(domain_id: int | None = None) -> dict[str, str]:
    """``os.environ`` plus what ``. build/colcon/install/local_setup.sh`` sets, the venv's bin first on PATH."""
    require_launch_stack()
    ensure_built()
    out = subprocess.run(["bash", "-c", f'. "{INSTALL / "local_setup.sh"}" && env -0'], capture_output=True,
                         check=True, env=dict(os.environ)).stdout
    env = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    return env


def use_installed_env(domain_id: int) -> dict[str, str]:
    """Make this (pytest) process launch from the install tree: launch_testing runs launch in-process."""
    env = installed_env(domain_id)
    for key in ("AMENT_PREFIX_PATH", "PYTHONPATH", "PATH", "ROS_DOMAIN_ID", "PYTHONUNBUFFERED",
                "RCUTILS_COLORIZED_OUTPUT", "COLCON_PREFIX_PATH"):
        if key in env:
            os.environ[key] = env[key]
    return env
