"""Provenance recorded in every artifact: package versions, config hash, code hash, time."""

from __future__ import annotations

import ast
import datetime as _dt
import hashlib
import importlib.metadata
import json
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import repshift

_PACKAGES = ("torch", "transformers", "sae-lens", "scikit-learn", "h5py", "numpy", "snakemake")


def package_versions(packages: Iterable[str] = _PACKAGES) -> dict[str, str]:
    out = {"repshift": repshift.__version__, "python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def config_hash(obj: Any) -> str:
    """Stable short hash of a JSON-able config fragment (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _module_path(root: Path, module: str) -> Path | None:
    rel = module.removeprefix("repshift").lstrip(".").replace(".", "/")
    for path in (root / f"{rel}.py", root / rel / "__init__.py"):
        if rel and path.exists():
            return path
    return root / "__init__.py" if not rel else None


def _repshift_imports(node: ast.AST) -> set[str]:
    """Dotted repshift modules imported anywhere below ``node`` (``from repshift.a import b`` may name module b)."""
    out: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.ImportFrom) and sub.module and sub.module.split(".")[0] == "repshift":
            out.add(sub.module)
            out.update(f"{sub.module}.{alias.name}" for alias in sub.names)
        elif isinstance(sub, ast.Import):
            out.update(a.name for a in sub.names if a.name.split(".")[0] == "repshift")
    return out


def _closure(root: Path, modules: Iterable[str]) -> dict[str, bytes]:
    """Source of every repshift module reachable from ``modules`` through imports (whole files, packages'
    ``__init__`` included): editing any of them changes the hash."""
    todo, seen = list(modules), {}
    while todo:
        module = todo.pop()
        path = _module_path(root, module)
        if path is None or module in seen:
            continue
        source = path.read_bytes()
        seen[module] = source
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages' __init__
        todo += sorted(_repshift_imports(ast.parse(source)))
    return seen


def _find_step(root: Path, name: str) -> tuple[str, ast.Module, ast.FunctionDef]:
    for path in sorted(root.glob("*/steps.py")):
        tree = ast.parse(path.read_bytes())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return f"repshift.{path.parent.name}.steps", tree, node
    raise KeyError(f"no step {name!r} in repshift/*/steps.py")


def step_code_hash(step: str, root: str | Path | None = None) -> str:
    """Content hash of exactly the code a workflow step runs, found from its imports (no hand-kept list).

    The step function, the helpers of its own module that it calls (transitively), and every repshift module
    those import, followed through imports to the end. Passed as a rule param, an edit of any of them reruns that
    step's jobs and no others (mtimes would rerun everything after a checkout). ``root``: the package folder
    to read (default: the imported repshift's).
    """
    root = Path(root) if root is not None else Path(repshift.__file__).parent
    module, tree, fn = _find_step(root, step)
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    imported = {}  # name bound by a module-level import -> the modules it may be
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("repshift"):
            for alias in node.names:
                imported[alias.asname or alias.name] = {node.module, f"{node.module}.{alias.name}"}
    used, todo, modules = set(), [fn], set()
    while todo:
        node = todo.pop()
        if node.name in used:
            continue
        used.add(node.name)
        modules |= _repshift_imports(node)
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and sub.id in defs:
                todo.append(defs[sub.id])
            if isinstance(sub, ast.Name) and sub.id in imported:
                modules |= imported[sub.id]
    h = hashlib.sha256()
    for name in sorted(used):
        h.update(ast.unparse(defs[name]).encode())
    for name, source in sorted(_closure(root, modules).items()):
        h.update(name.encode() + source)
    return h.hexdigest()[:16]


def module_code_hash(*modules: str) -> str:
    """Content hash of repshift modules (dotted, e.g. ``"sae.encode"``) and everything they import."""
    root = Path(repshift.__file__).parent
    h = hashlib.sha256()
    for name, source in sorted(_closure(root, [f"repshift.{m}" for m in modules]).items()):
        h.update(name.encode() + source)
    return h.hexdigest()[:16]


def provenance(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The provenance block stored as attributes / JSON next to every output."""
    return {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "config_hash": config_hash(dict(params or {})),
        "layer_convention": repshift.LAYER_CONVENTION,
    }
