"""Every results path: built and parsed here only."""

from __future__ import annotations

from pathlib import Path


def layer_file(acts_dir: str | Path, layer: int | str) -> Path:
    return Path(acts_dir) / f"layer-{int(layer)}.h5"
