"""The package's layering rules, checked on the imports every module's source holds (read with ``ast``).

Layers (one folder each) and what they may import:

* ``core``: the standard library, NumPy and OpenCV at module level; ONNX Runtime and Keras (with
  its TensorFlow, JAX or torch backend), h5py and simplejpeg only inside functions; from the
  package, only ``core``.
* ``training``: ``core`` and ``training``; never rclpy.
* ``bagio``: nothing from the package but ``bagio``; never rclpy.
* ``ros``: ``core``, ``bagio`` and ``ros``; never the training stack.
* ``tools``: anything. Nothing outside ``tools`` imports ``tools``.

Package-internal imports sit at module level, except imports of a module that pulls a heavy
library (Keras, TensorFlow, rclpy, ONNX Runtime, matplotlib) in at its own module level, which
may stay inside functions so that light code paths stay light. No module imports itself back
through a chain of imports (no import circles, function-level imports included).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

LAYERS = ("core", "training", "bagio", "ros", "tools")
MAY_IMPORT = {
    "core": {"core"},
    "training": {"core", "training"},
    "bagio": {"bagio"},
    "ros": {"core", "bagio", "ros"},
    "tools": set(LAYERS),
}
CORE_THIRD_PARTY = {"numpy", "cv2"}
#: Keras runs on TensorFlow, JAX or torch: the backends may ask those for devices, inside functions.
CORE_LAZY_ONLY = {"onnxruntime", "keras", "tensorflow", "jax", "torch", "h5py",  # h5py: .keras weights hash
                  "simplejpeg"}  # strict JPEG decoding of image files (core.imageio), as bagio decodes frames
HEAVY = {"keras", "tensorflow", "rclpy", "onnxruntime", "matplotlib", "tf2onnx", "onnx"}
NEVER = {"bagio": {"rclpy"}, "training": {"rclpy"}}


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it is, and whether it runs at module level."""

    module: str  # importing module, e.g. pkg.core.metrics
    target: str  # imported module, e.g. pkg.core.preprocessing or numpy
    line: int
    top_level: bool
    path: Path

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def module_name(path: Path, root: Path, package: str) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [package, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        pkg = parts if is_pkg else parts[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    # "from pkg.core import metrics" names the submodule pkg.core.metrics, "from pkg.core.metrics import
    # Confusion" a name in pkg.core.metrics: both are reduced to the longest known module later
    return [f"{base}.{a.name}" if base else a.name for a in node.names]


def read_imports(root: Path, package: str) -> list[Import]:
    """Every import in every module under ``root`` (the package folder named ``package``)."""
    out: list[Import] = []
    for path in sorted(root.rglob("*.py")):
        mod = module_name(path, root, package)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        top = {id(n) for n in tree.body}
        # statements directly in module-level if/try blocks also run at import time
        for n in tree.body:
            if isinstance(n, (ast.If, ast.Try)):
                for sub in ast.walk(n):
                    top.add(id(sub))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = _resolve(mod, path.name == "__init__.py", node)
            else:
                continue
            for t in dict.fromkeys(targets):
                out.append(Import(mod, t, node.lineno, id(node) in top, path))
    return out


def _known_module(name: str, modules: set[str]) -> str:
    """``pkg.core.metrics.Confusion`` -> ``pkg.core.metrics`` (the longest prefix that is a module)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in modules:
            return cand
    return name


def layer_of(module: str, package: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == package and parts[1] in LAYERS else None


def heavy_modules(imports: list[Import], package: str, modules: set[str]) -> set[str]:
    """Package modules that import a heavy library at module level, directly or through other package modules."""
    heavy = {i.module for i in imports if i.top_level and i.target.split(".")[0] in HEAVY}
    changed = True
    while changed:
        changed = False
        for i in imports:
            if i.top_level and i.module not in heavy and _known_module(i.target, modules) in heavy:
                heavy.add(i.module)
                changed = True
    return heavy


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a self-loop), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def check(root: Path, package: str) -> list[str]:
    """Every broken rule, one line each, naming the importing file, line and the offending import."""
    imports = read_imports(root, package)
    modules = {i.module for i in imports} | {module_name(p, root, package) for p in root.rglob("*.py")}
    heavy = heavy_modules(imports, package, modules)
    problems: list[str] = []
    edges: dict[str, set[str]] = {}
    for i in imports:
        src_layer = layer_of(i.module, package)
        top = i.target.split(".")[0]
        if top == package:
            target = _known_module(i.target, modules)
            if target == package or target == i.module:
                continue
            edges.setdefault(i.module, set()).add(target)
            dst_layer = layer_of(target, package)
            if src_layer and dst_layer and dst_layer not in MAY_IMPORT[src_layer]:
                problems.append(f"{i.where()}: {i.module} ({src_layer}) imports {target} ({dst_layer}); "
                                f"{src_layer} may import only {', '.join(sorted(MAY_IMPORT[src_layer]))}")
            elif src_layer is None and dst_layer == "tools" and not i.module.endswith("__main__"):
                problems.append(f"{i.where()}: {i.module} imports {target}; nothing outside tools imports tools")
            if not i.top_level and target not in heavy:
                problems.append(f"{i.where()}: {i.module} imports {target} inside a function; package-internal "
                                "imports belong at module level (only modules that pull in a heavy library may be "
                                "imported lazily)")
            continue
        if src_layer in NEVER and top in NEVER[src_layer]:
            problems.append(f"{i.where()}: {i.module} ({src_layer}) imports {top}, which {src_layer} must never import")
        if src_layer == "core" and top not in sys.stdlib_module_names and top != "__future__":
            if top in CORE_LAZY_ONLY:
                if i.top_level:
                    problems.append(f"{i.where()}: {i.module} (core) imports {top} at module level; core imports "
                                    f"{top} only inside functions")
            elif top not in CORE_THIRD_PARTY:
                problems.append(f"{i.where()}: {i.module} (core) imports {top}; core imports only the standard "
                                "library, numpy and cv2 (onnxruntime and keras only inside functions)")
    for cycle in find_cycles(edges):
        problems.append(f"import circle: {' -> '.join(cycle)} -> {cycle[0]}")
    return problems


def cross_test_imports(folder: Path) -> list[str]:
    """``file:line: imports test_x`` for each import of a ``test_*`` module by a ``*.py`` of ``folder``.

    Test files share code through named helper modules (and ``conftest.py``), never through each other.
    """
    problems = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            problems += [f"{path.name}:{node.lineno}: imports {n}" for n in names
                         if n.split(".")[0].startswith("test_")]
    return problems
