"""The layering rules of ``import_rules`` hold for the package, and each rule catches a tree that breaks it."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from domain_ids import domain_id, offset
from import_rules import check, cross_test_imports

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "road_seg_perception"


def test_package_follows_the_import_rules():
    problems = check(REPO / PACKAGE, PACKAGE)
    assert problems == [], "\n".join(problems)


def make_tree(root: Path, files: dict[str, str]) -> Path:
    """A synthetic package ``pkg`` with the five layer folders and the given module sources."""
    pkg = root / "pkg"
    for layer in ("", "core", "training", "bagio", "ros", "tools"):
        (pkg / layer).mkdir(parents=True, exist_ok=True)
        (pkg / layer / "__init__.py").write_text("")
    for rel, src in files.items():
        (pkg / rel).write_text(textwrap.dedent(src))
    return pkg


CLEAN = {
    "core/a.py": "import numpy as np\nimport cv2\n\ndef f():\n    import onnxruntime\n",
    "core/b.py": "from pkg.core.a import f\n",
    "training/t.py": "import keras\nfrom pkg.core import a\n",
    "training/u.py": "from pkg.core.b import f\n\ndef g():\n    from pkg.training.t import keras\n",
    "bagio/bag.py": "import rosbags\n",
    "ros/node.py": "import rclpy\nfrom pkg.core.a import f\nfrom pkg.bagio.bag import rosbags\n",
    "tools/cli.py": "from pkg.training.u import g\nfrom pkg.ros.node import f\n",
}


def test_clean_synthetic_tree_passes(tmp_path):
    assert check(make_tree(tmp_path, CLEAN), "pkg") == []


@pytest.mark.parametrize("name, files, expected", [
    ("core imports training", {"core/b.py": "from pkg.training.t import keras\n"},
     "pkg/core/b.py:1: pkg.core.b (core) imports pkg.training.t (training)"),
    ("core imports a third-party library", {"core/b.py": "import yaml\n"},
     "pkg.core.b (core) imports yaml; core imports only the standard library"),
    ("core imports onnxruntime at module level", {"core/b.py": "import onnxruntime\n"},
     "pkg.core.b (core) imports onnxruntime at module level"),
    ("bagio imports rclpy lazily", {"bagio/bag.py": "def f():\n    import rclpy\n"},
     "pkg/bagio/bag.py:2: pkg.bagio.bag (bagio) imports rclpy, which bagio must never import"),
    ("bagio imports core", {"bagio/bag.py": "from pkg.core.a import f\n"},
     "pkg.bagio.bag (bagio) imports pkg.core.a (core)"),
    ("ros imports training", {"ros/node.py": "from pkg.training.u import g\n"},
     "pkg.ros.node (ros) imports pkg.training.u (training)"),
    ("training imports rclpy", {"training/u.py": "import rclpy\n"},
     "pkg.training.u (training) imports rclpy"),
    ("core imports tools", {"core/b.py": "from pkg.tools import cli\n"},
     "pkg.core.b (core) imports pkg.tools.cli (tools)"),
    ("light internal import inside a function", {"training/u.py": "def g():\n    from pkg.core.b import f\n"},
     "pkg/training/u.py:2: pkg.training.u imports pkg.core.b inside a function"),
    ("relative import circle", {"core/a.py": "from . import b\n", "core/b.py": "from .a import x\n"},
     "import circle: pkg.core.a -> pkg.core.b -> pkg.core.a"),
    ("circle through a function-level import",
     {"tools/cli.py": "from pkg.tools import x\n", "tools/x.py": "def f():\n    import pkg.tools.cli\n"},
     "import circle: pkg.tools.cli -> pkg.tools.x -> pkg.tools.cli"),
])
def test_each_rule_catches_a_breaking_tree(tmp_path, name, files, expected):
    problems = check(make_tree(tmp_path, {**CLEAN, **files}), "pkg")
    assert any(expected in p for p in problems), f"{name}: {expected!r} not in {problems}"


def test_loading_a_keras_model_for_inference_imports_no_training_module(tmp_path):
    """A ``.keras`` with the package's custom layer loads through ``core.model_io`` alone."""
    code = textwrap.dedent(f"""
        import sys
        import keras
        import numpy as np
        from road_seg_perception.core.layers import custom_layers
        inp = keras.Input((8, 8, 3))
        out = keras.layers.Conv2D(1, 1, activation="sigmoid")(custom_layers()["ExposureNorm"]()(inp))
        keras.Model(inp, out).save({str(tmp_path / "m.keras")!r})
        from road_seg_perception.core.model_io import load_keras_model
        m = load_keras_model({str(tmp_path / "m.keras")!r})
        assert m(np.ones((1, 8, 8, 3), "float32")).shape == (1, 8, 8, 1)
        print(sorted(k for k in sys.modules if k.startswith("road_seg_perception.training")))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                       env={"PATH": "/usr/bin:/bin", "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
                            "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"


# ----------------------------------------------------------------------------- the test suite itself


def test_test_files_share_code_through_helpers_not_each_other():
    problems = cross_test_imports(REPO / "test")
    assert problems == [], "\n".join(problems)


def test_a_test_file_importing_another_is_named_with_its_line(tmp_path):
    (tmp_path / "helpers.py").write_text("import os\n")
    (tmp_path / "conftest.py").write_text("from helpers import os\n")
    (tmp_path / "test_a.py").write_text("from helpers import os\n\ndef f():\n    import test_b\n")
    (tmp_path / "test_b.py").write_text("import numpy\nfrom test_a import f\nimport json, test_c.sub\n")
    (tmp_path / "test_c.py").write_text("from . import test_a\n")
    assert cross_test_imports(tmp_path) == ["test_a.py:4: imports test_b", "test_b.py:2: imports test_a",
                                            "test_b.py:3: imports test_c.sub"]


def test_ros_domain_ids_stay_valid_and_apart_per_purpose():
    """Every ``domain_id("...")`` purpose the tests name gets its own offset; ids stay in 1..232 and apart."""
    purposes = set()
    for path in (REPO / "test").glob("*.py"):
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "domain_id" \
                    and n.args and isinstance(n.args[0], ast.Constant) and n.args[0].value:
                purposes.add(n.args[0].value)
    assert {"node_shutdown", "packaging", "launch", "soak"} <= purposes
    offsets = {p: offset(p) for p in purposes}
    assert len(set(offsets.values())) == len(offsets), sorted(offsets.items(), key=lambda kv: kv[1])
    ids = [domain_id(p, k) for p in purposes for k in range(2)]
    assert 1 <= min(ids) and max(ids) <= 232
    assert len(set(ids)) == len(ids)  # every (purpose, index) of a process has its own id
    assert domain_id("node") == domain_id("node") != domain_id("node", 1)
    with pytest.raises(ValueError, match="purpose"):
        domain_id("")


HOLD_IDS = """
import os, sys
sys.path.insert(0, sys.argv[1])
os.getpid = lambda: 4242  # every process starts from the same ids, as two runs whose pids agree modulo 200
from domain_ids import domain_id
print(" ".join(str(domain_id(p, k)) for p in ("node", "launch", "soak") for k in range(3)), flush=True)
sys.stdin.read()  # hold the ids until the test lets go
"""


def test_domain_ids_are_never_shared_between_processes():
    """Concurrent processes starting from the same ids each get ids no other one holds; freed ids come back."""
    def start():
        return subprocess.Popen([sys.executable, "-c", HOLD_IDS, str(REPO / "test")], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)

    procs = [start() for _ in range(4)]
    try:
        held = [set(map(int, p.stdout.readline().split())) for p in procs]
    finally:
        for p in procs:
            p.communicate("", timeout=60)
    assert [len(h) for h in held] == [9] * 4
    assert len(set().union(*held)) == 36, held  # no id in two processes
    late = start()  # the four have ended, so their locks are gone
    try:
        again = set(map(int, late.stdout.readline().split()))
    finally:
        late.communicate("", timeout=60)
    assert len(again) == 9 and again <= set().union(*held)  # the ids the four held are free again
