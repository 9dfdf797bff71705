"""Which jobs exist: every (model, dataset, layer, ...) the DAG needs, derived from the validated config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from repshift.config.specs import model_spec


def _resolve(layers: Any, n: int) -> list[int]:
    return list(range(n)) if layers == "all" else sorted(int(x) for x in layers)


def model_layers(cfg: Mapping[str, Any], model: str) -> list[int]:
    """Layers extracted for ``model`` (block indices)."""
    spec = model_spec(cfg, model)
    layers = _resolve(cfg["extraction"].get("layers", "all"), spec.num_layers)
    spec.check_layers(layers)
    return layers


def sae_layers(cfg: Mapping[str, Any], sae: str, model: str) -> list[int]:
    """Layers at which SAE family ``sae`` is applied to ``model``."""
    spec = model_spec(cfg, model)
    wanted = cfg["saes"][sae].get("layers", "all")
    layers = _resolve(wanted, spec.num_layers)
    spec.check_layers(layers)
    return sorted(set(layers) & set(model_layers(cfg, model)))


def comparison_layers(cfg: Mapping[str, Any], comparison: str) -> list[int]:
    c = cfg["comparisons"][comparison]
    return sorted(set(sae_layers(cfg, c["sae"], c["base"])) & set(sae_layers(cfg, c["sae"], c["adapted"])))


def probe_layers(cfg: Mapping[str, Any], task: str) -> list[int]:
    models = cfg["probes"]["tasks"][task]["models"]
    common = set(model_layers(cfg, models[0]))
    for m in models[1:]:
        common &= set(model_layers(cfg, m))
    return sorted(common)


def main_probe_tasks(cfg: Mapping[str, Any]) -> list[str]:
    """Tasks drawn in the layer-sweep figure: semantic labels on decoder streams (not modality, not image
    attributes, not vision towers, whose blocks are not the decoder's)."""
    return sorted(
        name
        for name, t in cfg["probes"]["tasks"].items()
        if t.get("target", "label") == "label"
        and cfg["datasets"][t["dataset"]]["modality"] != "attribute"
        and all(model_spec(cfg, m).reads_text for m in task_models(cfg, name))
    )


def task_models(cfg: Mapping[str, Any], task: str) -> list[str]:
    """Every model a probe task reads (within, cross-model and cross-modal)."""
    t = cfg["probes"]["tasks"][task]
    names = list(t["models"])
    for pair in t.get("cross_model", []):
        names += list(pair)
    names += list(t.get("cross_modal", []))
    return sorted(set(names))


def extraction_pairs(cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(model, dataset) pairs that need activations: one extraction job each."""
    pairs: set[tuple[str, str]] = set()
    for name, t in cfg["probes"]["tasks"].items():
        for m in task_models(cfg, name):
            pairs.add((m, t["dataset"]))
    for c in cfg["comparisons"].values():
        pairs.add((c["base"], c["dataset"]))
        pairs.add((c["adapted"], c["dataset"]))
    for s in cfg["saes"].values():
        if s["source"] == "demo":
            pairs.add((s["train"]["model"], s["train"]["dataset"]))
    pairs |= {(m, d) for _, m, d in sae_feature_pairs(cfg)}
    return sorted(pairs)


def needs_tokens(cfg: Mapping[str, Any], model: str, dataset: str) -> bool:
    """Token-level storage is kept only where the SAE stage reads it (not for pairs the fused SAE encodes in
    the extraction job itself)."""
    fused = fused_sae(cfg)
    for c in cfg["comparisons"].values():
        if c["dataset"] == dataset and model in (c["base"], c["adapted"]) and c["sae"] != fused:
            return True
    for s in cfg["saes"].values():
        if s["source"] == "demo" and (s["train"]["model"], s["train"]["dataset"]) == (model, dataset):
            return True
    # SAE-feature analyses read token-level codes: encode_sae needs token-level activations, unless the
    # extraction job encodes that pair with the same SAE itself (extraction.fused_sae)
    for sae, m, d in sae_feature_pairs(cfg):
        if (m, d) == (model, dataset) and not (sae == fused and (m, d) in fused_pairs(cfg)):
            return True
    return False


def sae_models(cfg: Mapping[str, Any], sae: str) -> list[tuple[str, str]]:
    """(model, dataset) pairs encoded with SAE family ``sae``."""
    out = set()
    for c in cfg["comparisons"].values():
        if c["sae"] == sae:
            out.add((c["base"], c["dataset"]))
            out.add((c["adapted"], c["dataset"]))
    return sorted(out)


# -- SAE-feature analyses (class features, SAE-feature classification; config key ``sae_features``) ---------
def sae_feature_analyses(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``sae_features`` entries by name (empty when the section is absent)."""
    return dict(cfg.get("sae_features") or {})


def sae_feature_pairs(cfg: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(sae, model, dataset) triples whose token-level SAE codes the SAE-feature analyses read."""
    return sorted(
        {(a["sae"], m, a["dataset"]) for a in sae_feature_analyses(cfg).values() for m in a["models"]}
    )


def sae_feature_layers(cfg: Mapping[str, Any], analysis: str, model: str) -> list[int]:
    """Layers of one analysis for one model: its ``layers`` (default all) among the SAE's layers."""
    a = cfg["sae_features"][analysis]
    available = sae_layers(cfg, a["sae"], model)
    wanted = a.get("layers", "all")
    return available if wanted == "all" else sorted(int(x) for x in wanted)


def sae_feature_jobs(cfg: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """(analysis, model, layer): one class-features and one classification job each."""
    return [
        (name, m, layer)
        for name, a in sorted(sae_feature_analyses(cfg).items())
        for m in a["models"]
        for layer in sae_feature_layers(cfg, name, m)
    ]


def fused_sae(cfg: Mapping[str, Any]) -> str | None:
    """The SAE encoded inside extraction jobs (``extraction.fused_sae``), or None."""
    return cfg["extraction"].get("fused_sae") or None


def fused_pairs(cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(model, dataset) pairs whose extraction job also encodes with the fused SAE (no encode_sae job)."""
    sae = fused_sae(cfg)
    if not sae:
        return []
    return sorted(set(sae_models(cfg, sae)) | {(m, d) for s, m, d in sae_feature_pairs(cfg) if s == sae})


def spliced_jobs(cfg: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(sae, model, dataset) triples of the spliced-loss stage (``spliced.datasets``)."""
    wanted = (cfg.get("spliced") or {}).get("datasets", "comparisons")
    jobs = set()
    for sae in cfg["saes"]:
        pairs = sae_models(cfg, sae)
        if wanted == "comparisons":
            jobs |= {(sae, m, d) for m, d in pairs}
        else:
            jobs |= {(sae, m, d) for m in {m for m, _ in pairs} for d in wanted}
    return sorted(jobs)


def dataset_source(cfg: Mapping[str, Any], dataset: str) -> str:
    """coco, cifar100 or prompts (the schema's default is coco)."""
    return str(cfg["datasets"][dataset].get("source", "coco"))
