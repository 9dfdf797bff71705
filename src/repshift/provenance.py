"""Provenance recorded in every artifact: package versions, config hash, code hash, time."""

from __future__ import annotations

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


def code_hash(modules: Iterable[str]) -> str:
    """Content hash of repshift code: whole modules (``"extract"``) or single functions (``"steps:encode_sae"``).

    Passed as a rule param, it makes an edit of the code behind a step rerun exactly the jobs of that step
    (mtimes would rerun everything after a checkout; a hash of all of repshift would rerun GPU jobs for a
    figure tweak).
    """
    import importlib
    import inspect

    root = Path(repshift.__file__).parent
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        h.update(name.encode())
        if ":" in name:
            module, func = name.split(":", 1)
            obj = getattr(importlib.import_module(f"repshift.{module}"), func)
            h.update(inspect.getsource(obj).encode())
            continue
        path = root / f"{name.replace('.', '/')}.py"
        if not path.exists():
            path = root / name.replace(".", "/") / "__init__.py"
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def provenance(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The provenance block stored as attributes / JSON next to every output."""
    return {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "config_hash": config_hash(dict(params or {})),
        "layer_convention": repshift.LAYER_CONVENTION,
    }
