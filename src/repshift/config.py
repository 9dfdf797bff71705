"""Typed views of the validated config and the cross-checks JSON Schema cannot express.

``rules/config.schema.yaml`` checks keys, types and slugs (Snakemake's ``validate`` also fills defaults);
:func:`check_config` then checks references between sections (a comparison naming an unknown model, a
layer a model does not have, ...) and the helpers here derive what the DAG needs: which (model, dataset)
pairs to extract, at which layers, with or without token-level storage. No I/O, no Snakemake.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VLM_FAMILIES = frozenset({"paligemma", "llava", "llava-next"})
HUB_HELP = (
    "The real preset needs network access to the Hugging Face hub and, for the gated Gemma models, a token "
    "of an account that accepted their licence (`hf auth login` or HF_TOKEN). To run offline, use "
    "the demo preset: `make demo`."
)


class ConfigError(ValueError):
    """A config value that is wrong, with what to change."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    source: str
    num_layers: int
    id: str | None = None
    revision: str = "main"
    path: str | None = None
    image_prompt: str = ""
    stream: str = "decoder"
    demo: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> ModelSpec:
        known = {"family", "source", "num_layers", "id", "revision", "path", "image_prompt", "stream", "demo"}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"models.{name}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(name=name, **{k: v for k, v in d.items() if k in known})

    @property
    def is_vlm(self) -> bool:
        return self.family in VLM_FAMILIES

    @property
    def reads_text(self) -> bool:
        """Whether text-only inputs go through this stream (the decoder; not a vision tower)."""
        return self.stream == "decoder"

    def location(self, data_dir: str | Path) -> str:
        """What ``from_pretrained`` is given: a hub id, a local folder, or the generated demo folder."""
        if self.source == "hub":
            return str(self.id)
        if self.source == "local":
            return str(self.path)
        return str(Path(data_dir) / "models" / self.name)

    def check_layers(self, layers: list[int]) -> None:
        bad = [layer for layer in layers if not 0 <= layer < self.num_layers]
        if bad:
            raise ConfigError(
                f"layer {bad[0]} requested but {self.name} has {self.num_layers} blocks "
                f"(0-{self.num_layers - 1}); layer L means the output of block L"
            )


def model_spec(cfg: Mapping[str, Any], name: str) -> ModelSpec:
    if name not in cfg["models"]:
        raise ConfigError(f"unknown model {name!r}; configured models: {sorted(cfg['models'])}")
    return ModelSpec.from_dict(name, cfg["models"][name])


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


def _check_sae_features(cfg: Mapping[str, Any]) -> None:
    datasets = cfg["datasets"]
    for name, a in sae_feature_analyses(cfg).items():
        where = f"sae_features.{name}"
        if a["sae"] not in cfg["saes"]:
            raise ConfigError(f"{where}.sae: unknown SAE {a['sae']!r}; saes: {sorted(cfg['saes'])}")
        if a["dataset"] not in datasets:
            raise ConfigError(
                f"{where}.dataset: unknown dataset {a['dataset']!r}; datasets: {sorted(datasets)}"
            )
        modality = datasets[a["dataset"]]["modality"]
        if modality not in ("image", "paired", "attribute"):
            raise ConfigError(
                f"{where}.dataset: {a['dataset']} has no image rows (modality {modality}); class features and "
                "SAE-feature classification read image tokens"
            )
        for m in a["models"]:
            if m not in cfg["models"]:
                raise ConfigError(f"{where}.models: unknown model {m!r}; models: {sorted(cfg['models'])}")
            spec = model_spec(cfg, m)
            if not spec.is_vlm:
                raise ConfigError(
                    f"{where}.models: {m} is a text-only model but {a['dataset']} is read through image tokens"
                )
            if not spec.reads_text:
                raise ConfigError(
                    f"{where}.models: {m} is a vision tower; the SAEs read the decoder's residual stream"
                )
            available = sae_layers(cfg, a["sae"], m)
            bad = [x for x in sae_feature_layers(cfg, name, m) if x not in available]
            if bad:
                raise ConfigError(
                    f"{where}.layers: layer {bad[0]} of {m} is not both extracted and covered by SAE {a['sae']} "
                    f"(available: {available})"
                )
            if not available:
                raise ConfigError(f"{where}: no layer of {m} is both extracted and covered by SAE {a['sae']}")


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


def check_config(cfg: Mapping[str, Any]) -> None:
    """Cross-section checks, run once before any job. Raises ConfigError naming the key to change."""
    models = cfg["models"]
    for name in models:
        spec = model_spec(cfg, name)
        if spec.source == "hub" and not spec.id:
            raise ConfigError(f"models.{name}: source hub needs `id` (e.g. google/gemma-2-2b)")
        if spec.source == "local" and not spec.path:
            raise ConfigError(f"models.{name}: source local needs `path` (a save_pretrained folder)")
        if spec.source == "demo":
            demo = dict(spec.demo)
            arch = demo.get("arch")
            if not arch:
                raise ConfigError(f"models.{name}: source demo needs `demo: {{arch: ...}}`")
            expected = {
                "gemma2": "causal-lm",
                "paligemma": "paligemma",
                "llava": "llava",
                "llava-next": "llava-next",
            }[arch]
            if spec.family != expected:
                raise ConfigError(f"models.{name}: demo arch {arch} is family {expected}, not {spec.family}")
            if arch != "gemma2":
                base = demo.get("base")
                if base not in models or models[base].get("demo", {}).get("arch") != "gemma2":
                    raise ConfigError(f"models.{name}.demo.base must name a demo gemma2 model, got {base!r}")
                if models[base]["num_layers"] != spec.num_layers:
                    raise ConfigError(f"models.{name}: num_layers must equal its base {base}'s")
                k = demo.get("perturb_from")
                if k is None or not 0 <= k <= spec.num_layers:
                    raise ConfigError(
                        f"models.{name}.demo.perturb_from must be in 0..{spec.num_layers}, got {k!r}"
                    )
        if spec.stream == "vision" and spec.family not in ("paligemma", "llava"):
            raise ConfigError(
                f"models.{name}: stream vision is supported for paligemma and llava, not {spec.family}"
            )
        model_layers(cfg, name)
    if cfg["coco"]["source"] == "path" and not cfg["coco"].get("root"):
        raise ConfigError("coco.source is 'path' but coco.root is not set: give the folder holding val2017/")
    check_datasets(cfg)
    datasets = cfg["datasets"]
    for name, s in cfg["saes"].items():
        src = s["source"]
        need = {"pretrained": ["release", "id_template"], "local": ["path_template"], "demo": ["train"]}[src]
        for key in need:
            if key not in s:
                raise ConfigError(f"saes.{name}: source {src} needs `{key}`")
        if src == "demo":
            if s["train"]["model"] not in models:
                raise ConfigError(f"saes.{name}.train.model: unknown model {s['train']['model']!r}")
            if s["train"]["dataset"] not in datasets:
                raise ConfigError(f"saes.{name}.train.dataset: unknown dataset {s['train']['dataset']!r}")
    for name, c in cfg["comparisons"].items():
        for key in ("base", "adapted"):
            if c[key] not in models:
                raise ConfigError(
                    f"comparisons.{name}.{key}: unknown model {c[key]!r}; models: {sorted(models)}"
                )
        if c["sae"] not in cfg["saes"]:
            raise ConfigError(
                f"comparisons.{name}.sae: unknown SAE {c['sae']!r}; saes: {sorted(cfg['saes'])}"
            )
        if c["dataset"] not in datasets:
            raise ConfigError(f"comparisons.{name}.dataset: unknown dataset {c['dataset']!r}")
        if datasets[c["dataset"]]["modality"] not in ("text", "paired"):
            raise ConfigError(
                f"comparisons.{name}: dataset {c['dataset']} has no text rows (text-only comparison)"
            )
        if not comparison_layers(cfg, name):
            raise ConfigError(f"comparisons.{name}: no layer is both extracted and covered by SAE {c['sae']}")
    _check_sae_stage(cfg)
    _check_sae_features(cfg)
    for name, t in cfg["probes"]["tasks"].items():
        if t["dataset"] not in datasets:
            raise ConfigError(f"probes.tasks.{name}.dataset: unknown dataset {t['dataset']!r}")
        modality = datasets[t["dataset"]]["modality"]
        for m in task_models(cfg, name):
            if m not in models:
                raise ConfigError(f"probes.tasks.{name}: unknown model {m!r}; models: {sorted(models)}")
            if modality in ("image", "attribute") and not model_spec(cfg, m).is_vlm:
                raise ConfigError(
                    f"probes.tasks.{name}: dataset {t['dataset']} is image-only but {m} is a text-only model"
                )
        if t.get("target", "label") == "modality":
            if modality != "paired":
                raise ConfigError(
                    f"probes.tasks.{name}: the modality probe needs a paired dataset, not {modality}"
                )
            for m in t["models"]:
                if not model_spec(cfg, m).is_vlm:
                    raise ConfigError(f"probes.tasks.{name}: the modality probe needs VLMs; {m} is text-only")
        for m in t.get("cross_modal", []) + (t["models"] if t.get("target", "label") == "modality" else []):
            if not model_spec(cfg, m).reads_text:
                raise ConfigError(f"probes.tasks.{name}: {m} is a vision tower; it reads no captions")
        for m in t.get("cross_modal", []):
            if not model_spec(cfg, m).is_vlm:
                raise ConfigError(f"probes.tasks.{name}.cross_modal: {m} is not a VLM")
            if modality != "paired":
                raise ConfigError(f"probes.tasks.{name}.cross_modal needs a paired dataset, not {modality}")


def _check_sae_stage(cfg: Mapping[str, Any]) -> None:
    """extraction.fused_sae and spliced: references, and no fused SAE fit on a pair it encodes."""
    datasets = cfg["datasets"]
    fused = fused_sae(cfg)
    if fused is not None:
        if fused not in cfg["saes"]:
            raise ConfigError(f"extraction.fused_sae: unknown SAE {fused!r}; saes: {sorted(cfg['saes'])}")
        s = cfg["saes"][fused]
        if s["source"] == "demo" and (s["train"]["model"], s["train"]["dataset"]) in fused_pairs(cfg):
            raise ConfigError(
                f"extraction.fused_sae: {fused} is fit on ({s['train']['model']}, {s['train']['dataset']}), a "
                "pair it would also encode inside that extraction job (a cycle); set fused_sae: null or fit the "
                "SAE on another dataset"
            )
        if int(cfg["extraction"].get("shards", 1)) > 1:
            raise ConfigError("extraction.fused_sae needs shards: 1 (codes are not merged across shards)")
    wanted = (cfg.get("spliced") or {}).get("datasets", "comparisons")
    if wanted != "comparisons":
        for d in wanted:
            if d not in datasets:
                raise ConfigError(f"spliced.datasets: unknown dataset {d!r}; datasets: {sorted(datasets)}")
            if datasets[d]["modality"] not in ("text", "paired"):
                raise ConfigError(
                    f"spliced.datasets: {d} has no text rows (modality {datasets[d]['modality']})"
                )


def dataset_source(cfg: Mapping[str, Any], dataset: str) -> str:
    """coco, cifar100 or prompts (the schema's default is coco)."""
    return str(cfg["datasets"][dataset].get("source", "coco"))


def check_datasets(cfg: Mapping[str, Any]) -> None:
    """Every dataset entry fits its source (keys, class names, sizes), and the sources it needs are configured."""
    from repshift.datasets import spec_from_config

    sources = {dataset_source(cfg, name) for name in cfg["datasets"]}
    coco = cfg["coco"]
    if "coco" in sources and coco["source"] == "download":
        from repshift.download import archive_spec

        for key in (coco["split"], "annotations_trainval2017"):
            spec = coco.get("archives", {}).get(key)
            if spec is None:
                raise ConfigError(
                    f"coco.archives.{key} is missing: coco.source is download, so give its url and md5/sha256 "
                    "(config.yaml lists the official ones)"
                )
            try:
                archive_spec(spec, f"coco.archives.{key}")
            except ValueError as err:
                raise ConfigError(str(err)) from err
    cifar = cfg.get("cifar100") or {}
    if "cifar100" in sources:
        src = cifar.get("source", "download")
        if src == "download":
            from repshift.download import archive_spec

            if not cifar.get("archive"):
                raise ConfigError(
                    "cifar100.archive is missing: a dataset has source cifar100 and cifar100.source is download; "
                    "give the archive's url and md5 (config.yaml lists the official ones)"
                )
            try:
                archive_spec(cifar["archive"], "cifar100.archive")
            except ValueError as err:
                raise ConfigError(str(err)) from err
        if src == "path" and not cifar.get("root"):
            raise ConfigError(
                "cifar100.source is 'path' but cifar100.root is not set: give the folder holding cifar-100-python/"
            )
    for name, d in cfg["datasets"].items():
        try:
            spec = spec_from_config(name, d)
        except ValueError as err:
            raise ConfigError(f"datasets.{name}: {err}") from err
        if dataset_source(cfg, name) == "cifar100":
            _check_cifar_sizes(name, spec, cifar)


def _check_cifar_sizes(name: str, spec: Any, cifar: Mapping[str, Any]) -> None:
    """Classes and n_per_class against what the configured CIFAR-100 copy holds."""
    from repshift.cifar import COARSE_LABEL_NAMES, COARSE_OF_FINE, FINE_LABEL_NAMES, OFFICIAL_SIZES

    synthetic = cifar.get("source") == "synthetic"
    if synthetic:
        syn = cifar.get("synthetic") or {}
        n_classes = int(syn.get("n_classes", 10))
        n_split = int(syn.get(f"n_{spec.split}", 200 if spec.split == "train" else 100))
        fine = FINE_LABEL_NAMES[:n_classes]
        present = set(fine)
        if spec.level == "coarse":
            present = {COARSE_LABEL_NAMES[COARSE_OF_FINE[FINE_LABEL_NAMES.index(f)]] for f in fine}
        missing = [c for c in spec.label_names if c not in present]
        if spec.classes is not None and missing:
            raise ConfigError(
                f"datasets.{name}: class {missing[0]!r} has no image in the synthetic CIFAR-100 "
                f"(cifar100.synthetic.n_classes: {n_classes} uses {', '.join(fine)})"
            )
        per_class = n_split // n_classes if spec.level == "fine" else None
    else:
        per_class = OFFICIAL_SIZES[spec.split] // (100 if spec.level == "fine" else 20)
    too_many = per_class is not None and spec.n_per_class is not None and spec.n_per_class > per_class
    if too_many and not spec.allow_fewer:
        raise ConfigError(
            f"datasets.{name}: n_per_class {spec.n_per_class} but the {spec.split} split has {per_class} images "
            f"per {spec.level} class; lower it (or leave it out for all) or set allow_fewer: true"
        )
