"""Which jobs exist: every (model, dataset, layer, ...) the DAG needs, derived from the validated config."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from repshift.config.sae_training import vlm_sae_figures
from repshift.config.specs import ConfigError, model_spec
from repshift.formats import layout


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
    """coco, cifar100, imagenet or prompts (the schema's default is coco)."""
    return str(cfg["datasets"][dataset].get("source", "coco"))


# -- paths and inputs of the rules (rules/common.smk binds ``config`` to these) -----------------------------
def canon(obj: Any) -> Any:
    """A config fragment with keys sorted recursively, so that params compare by value, not key order."""
    if isinstance(obj, Mapping):
        return {k: canon(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list | tuple):
        return [canon(x) for x in obj]
    return obj


def name_regex(cfg: Mapping[str, Any], section: str, **where: Any) -> str:
    """Wildcard regex of the names in a config section whose fields match ``where`` (never matches when none)."""
    names = [n for n, d in cfg[section].items() if all(d.get(k) == v for k, v in where.items())]
    return "|".join(names) if names else "(?!x)x"


def wildcard_regexes(cfg: Mapping[str, Any]) -> dict[str, str]:
    """The workflow's wildcard constraints (Snakefile), all in one place."""
    return {
        "model": name_regex(cfg, "models"),
        "dataset": name_regex(cfg, "datasets"),
        "sae": name_regex(cfg, "saes"),
        "comparison": name_regex(cfg, "comparisons"),
        "analysis": name_regex(cfg, "sae_features"),
        "task": "|".join(cfg["probes"]["tasks"]) or "(?!x)x",
        "layer": r"\d+",
        "shard": r"\d+",
    }


def _data(cfg: Mapping[str, Any]) -> str:
    return cfg["paths"]["data"]


def _results(cfg: Mapping[str, Any]) -> str:
    return cfg["paths"]["results"]


def coco_files(cfg: Mapping[str, Any]) -> dict[str, str]:
    """COCO annotation files and image folder of the configured split (an existing copy or under data/)."""
    c, split = cfg["coco"], cfg["coco"]["split"]
    root = c["root"] if c["source"] == "path" else f"{_data(cfg)}/coco"
    return {
        "instances": f"{root}/annotations/instances_{split}.json",
        "captions": f"{root}/annotations/captions_{split}.json",
        "images": f"{root}/{split}",
    }


def cifar_dir(cfg: Mapping[str, Any]) -> str:
    """The cifar-100-python folder (train, test, meta): an existing copy, or where download/synthetic put it."""
    c = cfg["cifar100"]
    root = c["root"] if c["source"] == "path" else f"{_data(cfg)}/cifar100"
    return f"{root}/cifar-100-python"


def dataset_images(cfg: Mapping[str, Any], dataset: str) -> str | list[str]:
    """Folder the image rows of ``dataset`` are read from: the COCO split, the dataset's exported CIFAR PNGs,
    or [] for a prompt set (no images)."""
    source = dataset_source(cfg, dataset)
    if source == "cifar100":
        return layout.dataset_image_dir(_data(cfg), dataset)
    if source == "prompts":
        return []
    if source == "imagenet":
        return str(
            cfg["imagenet"]["root"]
        )  # the local copy, read in place (manifest files are relative to it)
    return coco_files(cfg)["images"]


def manifest(cfg: Mapping[str, Any], dataset: str) -> str:
    return layout.manifest(_data(cfg), dataset)


def model_dir(cfg: Mapping[str, Any], model: str) -> str | list[str]:
    """The folder from_pretrained loads for demo and local models (a job output for demo ones); [] for hub."""
    spec = model_spec(cfg, model)
    return spec.location(_data(cfg)) if spec.source in ("demo", "local") else []


def demo_base_dir(cfg: Mapping[str, Any], model: str) -> str | list[str]:
    """The LLM folder a demo VLM copies its decoder from; [] for a demo LLM."""
    base = cfg["models"][model]["demo"].get("base")
    return model_dir(cfg, base) if base else []


def activations(cfg: Mapping[str, Any], model: str, dataset: str) -> str:
    return layout.activations_dir(_results(cfg), model, dataset)


def sae_dir(cfg: Mapping[str, Any], sae: str, layer: int | str) -> str:
    """Folder of one layer's SAE (SAE.save_model layout)."""
    s = cfg["saes"][sae]
    if s["source"] == "local":
        return s["path_template"].format(layer=layer)
    return layout.sae_layer_dir(_data(cfg), sae, layer)


def sae_dirs(cfg: Mapping[str, Any], sae: str, model: str) -> dict[int, str]:
    """``{layer: folder}`` of every layer at which ``sae`` is applied to ``model``."""
    return {layer: sae_dir(cfg, sae, layer) for layer in sae_layers(cfg, sae, model)}


def sae_inputs(cfg: Mapping[str, Any], sae: str, model: str) -> str | list[str]:
    """What encoding needs: the demo family's folder (one job fits all layers), the pretrained SAE's marker
    (one input for all of its fetched layers, so that the dry run lists one file) or each local layer folder."""
    source = cfg["saes"][sae]["source"]
    if source == "demo":
        return layout.sae_family_dir(_data(cfg), sae)
    if source == "pretrained":
        return layout.sae_fetched(_data(cfg), sae, model)
    return list(sae_dirs(cfg, sae, model).values())


def sae_train_acts(cfg: Mapping[str, Any], sae: str) -> str:
    """Activations a demo SAE family is fit on."""
    train = cfg["saes"][sae]["train"]
    return activations(cfg, train["model"], train["dataset"])


def codes_dir(cfg: Mapping[str, Any], sae: str, model: str, dataset: str) -> str:
    """Folder of one (sae, model, dataset)'s layer-L.codes.h5 files: encode_sae's output, or the activation
    folder itself when extraction.fused_sae encodes that pair inside its extraction job."""
    if sae == fused_sae(cfg) and (model, dataset) in fused_pairs(cfg):
        return activations(cfg, model, dataset)
    return layout.encoded_dir(_results(cfg), sae, model, dataset)


def fused_inputs(cfg: Mapping[str, Any], model: str, dataset: str) -> str | list[str]:
    """SAE folders an extraction job reads when it encodes with the fused SAE; nothing otherwise."""
    if (model, dataset) not in fused_pairs(cfg):
        return []
    return sae_inputs(cfg, fused_sae(cfg), model)


def fused_params(cfg: Mapping[str, Any], model: str, dataset: str) -> dict[str, Any]:
    """What the fused encoding needs ({} when the pair is not fused)."""
    if (model, dataset) not in fused_pairs(cfg):
        return {}
    sae = fused_sae(cfg)
    return {"sae": sae, "sae_dirs": sae_dirs(cfg, sae, model)}


def comparison_codes(cfg: Mapping[str, Any], comparison: str, role: str) -> str:
    """Codes folder of a comparison's ``base`` or ``adapted`` model."""
    c = cfg["comparisons"][comparison]
    return codes_dir(cfg, c["sae"], c[role], c["dataset"])


def all_shift_tables(cfg: Mapping[str, Any], *, latents: bool = False) -> list[str]:
    build = layout.shift_latents if latents else layout.shift_table
    return [build(_results(cfg), c) for c in cfg["comparisons"]]


def all_spliced_tables(cfg: Mapping[str, Any]) -> list[str]:
    return [layout.spliced_table(_results(cfg), *job) for job in spliced_jobs(cfg)]


def all_code_dirs(cfg: Mapping[str, Any]) -> list[str]:
    return sorted({codes_dir(cfg, sae, m, d) for sae in cfg["saes"] for m, d in sae_models(cfg, sae)})


def all_probe_tables(cfg: Mapping[str, Any], tasks: Iterable[str] | None = None) -> list[str]:
    """One train_probe table per (task, layer), for ``tasks`` (default every task)."""
    return [
        layout.probe_table(_results(cfg), task, layer)
        for task in (cfg["probes"]["tasks"] if tasks is None else tasks)
        for layer in probe_layers(cfg, task)
    ]


def cross_modal_tasks(cfg: Mapping[str, Any]) -> list[str]:
    """Probe tasks with cross-modal probes (they get a layer x layer transfer matrix)."""
    return [t for t, d in cfg["probes"]["tasks"].items() if d.get("cross_modal")]


def attribute_tasks(cfg: Mapping[str, Any]) -> list[str]:
    """Probe tasks on image-attribute datasets (brightness, redness, ...), decoder and vision tower."""
    tasks = cfg["probes"]["tasks"]
    return [t for t, d in tasks.items() if cfg["datasets"][d["dataset"]]["modality"] == "attribute"]


def pixel_baseline_tables(cfg: Mapping[str, Any]) -> list[str]:
    """One pixel-statistics baseline per attribute task (what trivial image statistics achieve)."""
    return [layout.pixel_baseline_table(_results(cfg), t) for t in attribute_tasks(cfg)]


def pixel_baseline_inputs(cfg: Mapping[str, Any], task: str) -> dict[str, Any]:
    dataset = cfg["probes"]["tasks"][task]["dataset"]
    return {"manifest": manifest(cfg, dataset), "images": dataset_images(cfg, dataset)}


def vision_tasks(cfg: Mapping[str, Any]) -> list[str]:
    """Probe tasks that read vision-tower streams only (their layer axis is the tower's blocks)."""
    return [
        t
        for t in cfg["probes"]["tasks"]
        if not any(model_spec(cfg, m).reads_text for m in task_models(cfg, t))
    ]


def curve_tasks(cfg: Mapping[str, Any]) -> list[str]:
    """Label probe tasks with a learning curve (train_fractions set)."""
    if not cfg["probes"]["settings"].get("train_fractions"):
        return []
    return [t for t, d in cfg["probes"]["tasks"].items() if d.get("target", "label") == "label"]


def probe_figures(cfg: Mapping[str, Any]) -> list[str]:
    """The probe companion figures this config has something to draw in."""
    figs = {
        "cross_modal_matrix": cross_modal_tasks(cfg),
        "attribute_probes": attribute_tasks(cfg),
        "learning_curves": curve_tasks(cfg),
    }
    return [layout.figure(_results(cfg), name) for name, tasks in figs.items() if tasks]


def cross_layer_tables(cfg: Mapping[str, Any]) -> list[str]:
    return [layout.cross_layer_table(_results(cfg), t) for t in cross_modal_tasks(cfg)]


def cross_layer_inputs(cfg: Mapping[str, Any], task: str) -> dict[str, Any]:
    """Saved fold probes of every layer of a task, and the activations of its cross-modal models."""
    t = cfg["probes"]["tasks"][task]
    weights = [layout.probe_weights(_results(cfg), task, layer) for layer in probe_layers(cfg, task)]
    return {"weights": weights, **{m: activations(cfg, m, t["dataset"]) for m in t.get("cross_modal", [])}}


def probe_inputs(cfg: Mapping[str, Any], task: str) -> dict[str, str]:
    """Activation folders of every model a probe task reads, named by model."""
    dataset = cfg["probes"]["tasks"][task]["dataset"]
    return {m: activations(cfg, m, dataset) for m in task_models(cfg, task)}


def token_partners(cfg: Mapping[str, Any], model: str, dataset: str) -> dict[str, Any]:
    """Models compared with ``model`` on ``dataset``'s text: their token ids must equal this model's."""
    out = {}
    for c in cfg["comparisons"].values():
        if c["dataset"] == dataset and model in (c["base"], c["adapted"]):
            other = c["adapted"] if c["base"] == model else c["base"]
            location = model_spec(cfg, other).location(_data(cfg))
            out[other] = {"spec": canon(cfg["models"][other]), "location": location}
    return canon(out)


def token_partner_dirs(cfg: Mapping[str, Any], model: str, dataset: str) -> list[str]:
    """Local folders of those models (generated demo models must exist before the check)."""
    return [
        p["location"]
        for name, p in token_partners(cfg, model, dataset).items()
        if model_spec(cfg, name).source != "hub"
    ]


def attribute_contact_sheets(cfg: Mapping[str, Any]) -> list[str]:
    return [
        layout.contact_sheet(_results(cfg), d)
        for d, spec in cfg["datasets"].items()
        if spec["modality"] == "attribute"
    ]


# -- SAE-feature analyses (rules/sae_features.smk) ----------------------------------------------------------
CLASS_FEATURE_KEYS = ("sae", "dataset", "top_k", "max_image_fraction", "n_top")
FEATURE_PROBE_KEYS = CLASS_FEATURE_KEYS[:2] + (
    "poolings",
    "top_n",
    "binarise",
    "scaling",
    "train_fractions",
    "outer_folds",
    "c_grid",
    "inner_folds",
    "seeds",
    "max_iter",
)


def sae_feature_params(cfg: Mapping[str, Any], analysis: str, keys: Iterable[str]) -> dict[str, Any]:
    """The keys of one sae_features entry that a rule reads (so that others never rerun it)."""
    a = cfg["sae_features"][analysis]
    return canon({k: a[k] for k in keys if k in a})


def class_feature_inputs(cfg: Mapping[str, Any], analysis: str, model: str) -> dict[str, str]:
    """Codes (token-level, per layer) and manifest (labels, class names, split) of one analysis."""
    a = cfg["sae_features"][analysis]
    return {"codes": codes_dir(cfg, a["sae"], model, a["dataset"]), "manifest": manifest(cfg, a["dataset"])}


def sae_feature_inputs(cfg: Mapping[str, Any], analysis: str, model: str) -> dict[str, str]:
    """The same plus the activations (pooled means: the raw-activation reference)."""
    dataset = cfg["sae_features"][analysis]["dataset"]
    return class_feature_inputs(cfg, analysis, model) | {"acts": activations(cfg, model, dataset)}


def all_sae_feature_tables(cfg: Mapping[str, Any], kind: str) -> list[str]:
    """kind: class_features or probe."""
    return [layout.sae_feature_table(_results(cfg), *job, kind) for job in sae_feature_jobs(cfg)]


def sae_feature_targets(cfg: Mapping[str, Any]) -> list[str]:
    """The SAE-feature figure and every class-features table, for the default target (none when
    sae_features is empty)."""
    if not sae_feature_jobs(cfg):
        return []
    return [layout.figure(_results(cfg), "sae_features"), *all_sae_feature_tables(cfg, "class_features")]


def default_targets(cfg: Mapping[str, Any]) -> list[str]:
    """Everything ``rule all`` asks for."""
    # the SAE-latent figures draw the comparisons: none configured (e.g. line-of-sight), no empty figures
    latent = ("latent_density", "latents_shift") if cfg.get("comparisons") else ()
    figs = [layout.figure(_results(cfg), n) for n in ("layer_sweep", "probe_tasks", *latent)]
    return (
        figs
        + probe_figures(cfg)
        + pixel_baseline_tables(cfg)
        + vlm_sae_figures(cfg)
        + sae_feature_targets(cfg)
        + attribute_contact_sheets(cfg)
    )


def imagenet_mapping(cfg: Mapping[str, Any]) -> str:
    """``<imagenet.root>/LOC_synset_mapping.txt``, the input of every ImageNet dataset job; a ConfigError naming
    the key and the expected layout when the local copy is not there (ImageNet is never downloaded)."""
    from repshift.data.imagenet import EXPECTED_LAYOUT, SYNSET_MAPPING

    root = Path(str((cfg.get("imagenet") or {}).get("root") or ""))
    path = root / SYNSET_MAPPING
    if not path.is_file():
        raise ConfigError(
            f"imagenet.root: no {path}; an ImageNet dataset needs a local copy laid out as {EXPECTED_LAYOUT}"
        )
    return str(path)
