"""Foundation checks: lint, colcon build and install layout, metadata agreement, rclpy pub/sub."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from domain_ids import domain_id
from import_rules import read_imports

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _setup_kwargs() -> dict:
    """The literal keyword arguments of ``setup(...)`` in setup.py (parsed, not executed)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    consts = {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    out = {}
    for kw in call.keywords:
        if isinstance(kw.value, ast.Name) and kw.value.id in consts:
            out[kw.arg] = consts[kw.value.id]
        else:
            try:
                out[kw.arg] = ast.literal_eval(kw.value)
            except ValueError:
                pass
    return out


def console_scripts() -> list[str]:
    return [s.split("=")[0].strip() for s in _setup_kwargs()["entry_points"]["console_scripts"]]


def test_ruff_clean():
    ruff = shutil.which("ruff", path=str(BIN)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    r = subprocess.run([ruff, "check", "road_seg_perception", "test", "launch", "setup.py"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_package_xml_and_setup_py_agree():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    kw = _setup_kwargs()
    assert root.findtext("name") == kw["name"] == "road_seg_perception"
    assert root.findtext("version") == kw["version"]
    assert root.findtext("license") == kw["license"]
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "launch", "launch_ros",
            "python3-numpy", "python3-opencv"} <= deps
    assert "python3-pytest" in {e.text for e in root.findall("test_depend")}
    from road_seg_perception import __version__

    assert __version__ == kw["version"]


#: Import name -> rosdep key, where the two differ (ROS packages are imported by their key).
ROSDEP_KEYS = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml", "tqdm": "python3-tqdm",
               "matplotlib": "python3-matplotlib"}
#: Import name -> the pip distribution pinned in requirements*.txt, for libraries with no rosdep key.
#: package.xml's "pip only" comment names each.
PIP_ONLY = {"keras": "keras", "onnx": "onnx", "onnxruntime": "onnxruntime", "rosbags": "rosbags",
            "simplejpeg": "simplejpeg", "tensorflow": "tensorflow-cpu"}
#: Imported only on optional paths, each guarded with a clear message or a fallback; no dependency declared.
OPTIONAL = {
    "h5py": "installed with keras; the .keras weights hash returns None without it",
    "jax": "only when Keras runs on the JAX backend (GPU probe)",
    "torch": "only when Keras runs on the torch backend (GPU probe)",
    "PIL": "GIF overlays in road-seg-eval, from matplotlib's own dependency",
    "ray": "road-seg-fleet only (requirements-fleet.txt)",
}


def _imported_libraries() -> dict[str, str]:
    """Top-level third-party modules the package imports, each with one file that imports it."""
    found: dict[str, str] = {}
    for imp in read_imports(REPO / "road_seg_perception", "road_seg_perception"):
        top = imp.target.split(".")[0]
        if top not in sys.stdlib_module_names and top not in ("road_seg_perception", "__future__"):
            found.setdefault(top, str(imp.path.relative_to(REPO)))
    return found


def test_every_imported_library_is_declared():
    """An exec_depend, a pip-only library named in package.xml and pinned in requirements, or an optional one."""
    text = (REPO / "package.xml").read_text()
    deps = {e.text for e in ET.parse(REPO / "package.xml").getroot().findall("exec_depend")}
    comment = re.search(r"<!-- pip only \(no rosdep key\): ([^.]+)\.", text)
    assert comment, "package.xml has no 'pip only (no rosdep key): ...' comment"
    assert sorted(comment.group(1).split(", ")) == sorted(PIP_ONLY)
    pinned = {line.split("==")[0].split("[")[0].strip().lower() for req in REPO.glob("requirements*.txt")
              for line in req.read_text().splitlines() if "==" in line and not line.startswith("#")}
    assert {dist for dist in PIP_ONLY.values()} <= pinned, sorted(set(PIP_ONLY.values()) - pinned)
    problems = []
    for name, where in sorted(_imported_libraries().items()):
        if ROSDEP_KEYS.get(name, name) in deps or name in PIP_ONLY or name in OPTIONAL:
            continue
        problems.append(f"{where} imports {name}: not an exec_depend of package.xml, not pip only, not optional")
    assert problems == [], "\n".join(problems)
    assert not {ROSDEP_KEYS.get(n, n) for n in PIP_ONLY} & deps  # pip-only libraries have no exec_depend


def test_setup_cfg_puts_scripts_where_ros2_run_looks():
    text = (REPO / "setup.cfg").read_text()
    assert "script_dir=$base/lib/road_seg_perception" in text
    assert "install_scripts=$base/lib/road_seg_perception" in text


def test_colcon_build_install_tree(tmp_path):
    colcon = shutil.which("colcon", path=str(BIN)) or shutil.which("colcon")
    if colcon is None:
        pytest.skip("colcon is not installed")
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    # A workspace with the package as its only source (no build outputs, venvs or runs).
    ignore = shutil.ignore_patterns(".venv", ".git", "runs", "out", "build", "install", "log", "__pycache__",
                                    ".pytest_cache", ".ruff_cache", "*.egg-info")
    shutil.copytree(REPO, ws / "src" / "road_seg_perception", ignore=ignore)
    r = subprocess.run([colcon, "build", "--base-paths", "src"], cwd=ws, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    share = ws / "install" / "road_seg_perception" / "share" / "road_seg_perception"
    for sub in ("package.xml", "launch", "config", "models"):
        assert (share / sub).exists(), f"{share / sub} missing"
    assert (share / "launch" / "road_segmentation.launch.py").is_file()
    assert (share / "config" / "road_seg.yaml").is_file()
    assert (share / "config" / "fastdds_large_images.xml").is_file()
    assert (ws / "install" / "road_seg_perception" / "share" / "ament_index" / "resource_index" / "packages"
            / "road_seg_perception").is_file()
    lib = ws / "install" / "road_seg_perception" / "lib" / "road_seg_perception"
    scripts = console_scripts()
    assert "road_seg_node" in scripts
    for name in scripts:
        assert (lib / name).is_file(), f"console script {name} not installed under {lib}"


def test_fastdds_large_images_profile():
    """The shipped Fast DDS profile: default participant, 16 MB shared-memory segments, UDPv4 kept."""
    ns = {"f": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    root = ET.parse(REPO / "config" / "fastdds_large_images.xml").getroot()
    descriptors = {d.findtext("f:transport_id", namespaces=ns): d
                   for d in root.iterfind(".//f:transport_descriptor", ns)}
    types = {k: d.findtext("f:type", namespaces=ns) for k, d in descriptors.items()}
    assert sorted(types.values()) == ["SHM", "UDPv4"]
    shm = next(d for d in descriptors.values() if d.findtext("f:type", namespaces=ns) == "SHM")
    assert int(shm.findtext("f:segment_size", namespaces=ns)) >= 4 * 1280 * 720 * 3  # a few 720p frames
    participant = root.find(".//f:participant", ns)
    assert participant.get("is_default_profile") == "true"
    used = [t.text for t in participant.iterfind(".//f:userTransports/f:transport_id", ns)]
    assert set(used) == set(descriptors)
    assert participant.findtext(".//f:useBuiltinTransports", namespaces=ns) == "false"


def test_rclpy_image_roundtrip():
    rclpy = pytest.importorskip("rclpy")
    from rclpy.context import Context
    from sensor_msgs.msg import Image

    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id("packaging"))
    try:
        node = rclpy.create_node("packaging_smoke", context=ctx)
        got: list[Image] = []
        node.create_subscription(Image, "smoke_image", got.append, 10)
        pub = node.create_publisher(Image, "smoke_image", 10)
        msg = Image(height=2, width=3, encoding="rgb8", step=9, data=bytes(range(18)))
        msg.header.frame_id = "camera"
        msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 345
        executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            pub.publish(msg)
            executor.spin_once(timeout_sec=0.1)
        assert got, "no message received within 10 s"
        r = got[0]
        assert (r.header.stamp.sec, r.header.stamp.nanosec, r.header.frame_id) == (12, 345, "camera")
        assert (r.height, r.width, r.encoding, r.step) == (2, 3, "rgb8", 9)
        assert bytes(r.data) == bytes(range(18))
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def _ament_packages() -> set[str]:
    """Packages registered in the ament index of AMENT_PREFIX_PATH and of this Python's prefix."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    found: set[str] = set()
    for prefix in prefixes:
        d = Path(prefix) / "share" / "ament_index" / "resource_index" / "packages"
        if d.is_dir():
            found |= {p.name for p in d.iterdir()}
    return found


def _imported_top_level(files) -> set[str]:
    names: set[str] = set()
    for f in files:
        for n in ast.walk(ast.parse(Path(f).read_text())):
            if isinstance(n, ast.Import):
                names |= {a.name.split(".")[0] for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                names.add(n.module.split(".")[0])
    return names


def _launch_file_packages() -> set[str]:
    """``package="..."`` of the launch files' nodes, and ``ros2 <verb>`` commands (``ros2 bag`` is ros2bag)."""
    used: set[str] = set()
    for f in (REPO / "launch").glob("*.launch.py"):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.keyword) and n.arg == "package" and isinstance(n.value, ast.Constant):
                used.add(n.value.value)
            if isinstance(n, ast.List) and len(n.elts) >= 2 and all(isinstance(e, ast.Constant) for e in n.elts[:2]) \
                    and n.elts[0].value == "ros2":
                used.add("ros2" + n.elts[1].value)
    return used - {"road_seg_perception"}


def test_package_xml_declares_every_ros_package_used():
    """Every ROS package the code imports or the launch files start is an exec_depend (tests' ones a
    test_depend); ``ros2 launch`` (ros2launch) is how the package is started."""
    root = ET.parse(REPO / "package.xml").getroot()
    exec_deps = {e.text for e in root.findall("exec_depend")}
    test_deps = {e.text for e in root.findall("test_depend")}
    index = _ament_packages() - {"road_seg_perception"}
    assert {"rclpy", "sensor_msgs", "launch"} <= index, "the ament index of this environment was not found"
    code = [*REPO.glob("road_seg_perception/**/*.py"), *REPO.glob("launch/*.py")]
    used = {m for m in _imported_top_level(code) if m in index} | _launch_file_packages() | {"ros2launch"}
    assert {"rclpy", "rcl_interfaces", "lifecycle_msgs", "launch_ros", "rviz2", "ros2bag"} <= used
    assert used <= exec_deps, f"missing exec_depend: {sorted(used - exec_deps)}"
    tests = {m for m in _imported_top_level(REPO.glob("test/*.py")) if m in index}
    assert tests <= exec_deps | test_deps, f"missing test_depend: {sorted(tests - exec_deps - test_deps)}"


def test_setup_py_installs_both_nodes_and_no_tests_require():
    kw = _setup_kwargs()
    assert "tests_require" not in kw
    assert {"road_seg_node", "road_seg_lifecycle_node", "road-seg-replay"} <= set(console_scripts())
