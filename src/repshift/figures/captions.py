"""What the report says about each figure, as pure functions of the config: the n behind it (dataset sizes,
folds, seeds), the palette the figure jobs draw with, and which figures the report holds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from repshift.config import targets as T
from repshift.figures.style import Palette


def palette_params(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The figures' palette as plain params (models, datasets and comparisons in config order)."""
    return Palette.from_config(cfg).to_params()


def dataset_n(cfg: Mapping[str, Any], dataset: str) -> str:
    """How many items a dataset holds, as configured: ``demo-categories: 80 images x 4 classes (+ captions)``."""
    d = cfg["datasets"][dataset]
    if "prompts" in d:
        return f"{dataset}: {len(d['prompts'])} prompts"
    if d.get("modality") == "attribute":
        factors = d.get("factors", [])
        return f"{dataset}: {d['n_base']} base images x {len(factors)} variants = {d['n_base'] * len(factors)} images"
    classes = d.get("classes", [])
    n = len(classes) * int(d.get("n_per_class", 0))
    extra = " (each with a caption)" if d.get("modality") == "paired" else ""
    return f"{dataset}: {n} images, {len(classes)} classes x {d.get('n_per_class')}{extra}"


def _join(parts: Iterable[str]) -> str:
    return "; ".join(dict.fromkeys(parts)) or "nothing configured"


def probe_n(cfg: Mapping[str, Any], tasks: Iterable[str]) -> str:
    """Per probe task: its dataset's n and the repeated cross-validation behind each interval."""
    seeds = len(cfg["probes"]["settings"].get("seeds", [0]))
    out = []
    for task in tasks:
        dataset = cfg["probes"]["tasks"][task]["dataset"]
        folds = cfg["datasets"][dataset].get("folds", "?")
        out.append(f"{task} on {dataset_n(cfg, dataset)} ({folds} folds x {seeds} seeds)")
    return _join(out)


def comparison_n(cfg: Mapping[str, Any]) -> str:
    """Per comparison dataset: its n (the shift and transfer panels are computed on all its text tokens)."""
    return _join(dataset_n(cfg, c["dataset"]) for c in (cfg.get("comparisons") or {}).values())


def sae_feature_n(cfg: Mapping[str, Any]) -> str:
    analyses = T.sae_feature_analyses(cfg)
    return _join(f"{name} on {dataset_n(cfg, a['dataset'])}" for name, a in analyses.items())


def vlm_sae_n(cfg: Mapping[str, Any]) -> str:
    """The trained SAEs' data: the dataset, which folds are held out for evaluation, the training tokens."""
    st = cfg.get("sae_training") or {}
    if not st.get("models"):
        return "no SAE trained (sae_training.models is empty)"
    folds = ", ".join(str(f) for f in st.get("heldout_folds", []))
    tokens = (st.get("train") or {}).get("tokens")
    return (
        f"{dataset_n(cfg, st['dataset'])}; evaluated on held-out fold(s) {folds}; "
        f"{tokens:,} training tokens per SAE"
    )


def steering_n(cfg: Mapping[str, Any]) -> str:
    """How many held-out inputs each steering measure averages, as configured."""
    s = cfg.get("steering") or {}
    task = s.get("task")
    if not task or task not in cfg["probes"]["tasks"]:
        return "no steering jobs"
    dataset = cfg["probes"]["tasks"][task]["dataset"]
    return (
        f"Each point: at most {s.get('max_examples', 32)} held-out inputs of the source class (fold "
        f"{s.get('heldout_fold', 0)} of {dataset_n(cfg, dataset)})"
    )


def figure_n(cfg: Mapping[str, Any], figure: str) -> str:
    """The sentence a figure's caption gives for its n."""
    if figure == "layer_sweep":
        return f"Shift and transfer: {comparison_n(cfg)}. Probes: {probe_n(cfg, T.main_probe_tasks(cfg))}."
    if figure in ("latent_density", "latents_shift"):
        return f"{comparison_n(cfg)}."
    if figure == "sae_features":
        return f"{sae_feature_n(cfg)}."
    if figure in ("vlm_sae", "dictionary_match", "modality_sharing", "sparse_probes"):
        return f"{vlm_sae_n(cfg)}."
    if figure == "steering":
        return f"{steering_n(cfg)}."
    chosen = {
        "probe_tasks": list(cfg["probes"]["tasks"]),
        "attribute_probes": T.attribute_tasks(cfg),
        "cross_modal_matrix": T.cross_modal_tasks(cfg),
        "learning_curves": T.curve_tasks(cfg),
    }[figure]
    return f"{probe_n(cfg, chosen)}."
