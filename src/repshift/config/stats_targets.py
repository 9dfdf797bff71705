"""Which statistics jobs exist: the probe summaries (one per probe task), from the validated config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from repshift.config.targets import all_probe_tables
from repshift.formats import layout


def probe_summaries(cfg: Mapping[str, Any]) -> list[str]:
    """One summarize_probes table per probe task."""
    return [layout.probe_summary(cfg["paths"]["results"], task) for task in cfg["probes"]["tasks"]]


def probe_summary_inputs(cfg: Mapping[str, Any], task: str) -> list[str]:
    """Every layer's train_probe table of ``task``."""
    return all_probe_tables(cfg, [task])
