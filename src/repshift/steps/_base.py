"""The step registry shared by the stage modules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

STEPS: dict[str, Callable[..., Any]] = {}


def step(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register a workflow step under its function name (``repshift step NAME`` and the rule scripts)."""
    STEPS[fn.__name__] = fn
    return fn


def layer_file(acts_dir: str | Path, layer: int | str) -> Path:
    return Path(acts_dir) / f"layer-{int(layer)}.h5"
