"""Which jobs the ``sae_training`` section asks for (pure functions of the validated config)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from repshift.formats import layout

VLM_SAE_TABLES = ("curve", "eval", "compare", "sharing", "sparse")
VLM_SAE_FIGURES = ("vlm_sae", "dictionary_match", "modality_sharing", "sparse_probes")


def trained_jobs(cfg: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(model, layer) of every SAE to train, in config order of models."""
    section = cfg.get("sae_training") or {}
    return [
        (m, int(layer)) for m, entry in (section.get("models") or {}).items() for layer in entry["layers"]
    ]


def all_vlm_sae_tables(cfg: Mapping[str, Any], kind: str) -> list[str]:
    results = cfg["paths"]["results"]
    return [layout.vlm_sae_table(results, m, layer, kind) for m, layer in trained_jobs(cfg)]


def vlm_sae_figures(cfg: Mapping[str, Any], ext: str = "pdf") -> list[str]:
    if not trained_jobs(cfg):
        return []
    return [layout.figure(cfg["paths"]["results"], name, ext) for name in VLM_SAE_FIGURES]
