"""Validation, wildcard constraints and small input functions shared by every stage (no rules here)."""

from pathlib import Path

from snakemake.utils import validate

from repshift import config as rcfg
from repshift.formats.provenance import module_code_hash, step_code_hash

rcfg.checks.validate_config(
    config, Path(workflow.basedir, "rules", "config.schema.yaml")
)
rcfg.check_config(config)

DATA = config["paths"]["data"]
RESULTS = config["paths"]["results"]
SPLIT = config["coco"]["split"]
LOGS = f"{RESULTS}/logs"
SHARDS = config["extraction"]["shards"]
# With shards > 1, extraction writes shard folders that merge_activations joins into the usual folder.
EXTRACTED = (
    f"{RESULTS}/activations/shards/{{model}}/{{dataset}}/shard-{{shard}}"
    if SHARDS > 1
    else f"{RESULTS}/activations/{{model}}/{{dataset}}"
)
SHARD = ".shard-{shard}" if SHARDS > 1 else ""
BENCH = f"{RESULTS}/benchmarks"


def _names(section, **where):
    """Names in a config section whose fields match ``where``; a never-matching regex when none do."""
    names = [
        n
        for n, d in config[section].items()
        if all(d.get(k) == v for k, v in where.items())
    ]
    return "|".join(names) if names else "(?!x)x"


def step_hash(step):
    """Content hash of exactly the code a step runs (found from its imports): editing it reruns that step's jobs."""
    return step_code_hash(step)


def canon(obj):
    """A config fragment with keys sorted recursively, so that params compare by value, not key order."""
    if isinstance(obj, dict):
        return {k: canon(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [canon(x) for x in obj]
    return obj


def coco_root():
    if config["coco"]["source"] == "path":
        return config["coco"]["root"]
    return f"{DATA}/coco"


def coco_files():
    root = coco_root()
    return {
        "instances": f"{root}/annotations/instances_{SPLIT}.json",
        "captions": f"{root}/annotations/captions_{SPLIT}.json",
        "images": f"{root}/{SPLIT}",
    }


def cifar_dir():
    """The cifar-100-python folder (train, test, meta): an existing copy, or where download/synthetic put it."""
    c = config["cifar100"]
    root = c["root"] if c["source"] == "path" else f"{DATA}/cifar100"
    return f"{root}/cifar-100-python"


def dataset_source(dataset):
    return rcfg.dataset_source(config, dataset)


def dataset_images(dataset):
    """Folder the image rows of ``dataset`` are read from: the COCO split, the dataset's exported CIFAR PNGs,
    or [] for a prompt set (no images)."""
    source = dataset_source(dataset)
    if source == "cifar100":
        return f"{DATA}/datasets/{dataset}/images"
    if source == "prompts":
        return []
    return coco_files()["images"]


def manifest(dataset):
    return f"{DATA}/datasets/{dataset}.tsv"


def model_dir(model):
    """The folder from_pretrained loads for demo models (a generated job output); nothing otherwise."""
    spec = rcfg.model_spec(config, model)
    return spec.location(DATA) if spec.source in ("demo", "local") else []


def activations(model, dataset):
    return f"{RESULTS}/activations/{model}/{dataset}"


def sae_dir(sae, layer):
    """Folder of one layer's SAE (SAE.save_model layout)."""
    s = config["saes"][sae]
    if s["source"] == "local":
        return s["path_template"].format(layer=layer)
    return f"{DATA}/saes/{sae}/layer-{layer}"


def sae_inputs(sae, layers):
    """What encoding needs: the demo family's folder (one job fits all layers) or each layer's folder."""
    if config["saes"][sae]["source"] == "demo":
        return f"{DATA}/saes/{sae}"
    return [sae_dir(sae, layer) for layer in layers]


def codes_dir(sae, model, dataset):
    """Folder of one (sae, model, dataset)'s layer-L.codes.h5 files: encode_sae's output, or the activation
    folder itself when extraction.fused_sae encodes that pair inside its extraction job.
    """
    if sae == rcfg.fused_sae(config) and (model, dataset) in rcfg.fused_pairs(config):
        return activations(model, dataset)
    return f"{RESULTS}/sae/{sae}/{model}/{dataset}"


def fused_inputs(model, dataset):
    """SAE folders an extraction job reads when it encodes with the fused SAE; nothing otherwise."""
    if (model, dataset) not in rcfg.fused_pairs(config):
        return []
    sae = rcfg.fused_sae(config)
    return sae_inputs(sae, rcfg.sae_layers(config, sae, model))


def fused_params(model, dataset):
    """What the fused encoding needs ({} when the pair is not fused)."""
    if (model, dataset) not in rcfg.fused_pairs(config):
        return {}
    sae = rcfg.fused_sae(config)
    layers = rcfg.sae_layers(config, sae, model)
    return {"sae": sae, "sae_dirs": {layer: sae_dir(sae, layer) for layer in layers}}


def fused_code_hash(model, dataset):
    """Code hash of the fused encoding, only for fused pairs (SAE edits never rerun plain extractions)."""
    if (model, dataset) not in rcfg.fused_pairs(config):
        return ""
    return module_code_hash("sae.encode")


def sae_outputs(comparison, role):
    c = config["comparisons"][comparison]
    return codes_dir(c["sae"], c[role], c["dataset"])


def all_shift_tables():
    return [f"{RESULTS}/sae/shift/{c}.tsv" for c in config["comparisons"]]


def all_spliced_tables():
    return [
        f"{RESULTS}/sae/spliced/{sae}/{model}/{dataset}.tsv"
        for sae, model, dataset in rcfg.spliced_jobs(config)
    ]


def all_code_dirs():
    return sorted(
        {
            codes_dir(sae, model, dataset)
            for sae in config["saes"]
            for model, dataset in rcfg.sae_models(config, sae)
        }
    )


def all_probe_tables(tasks=None):
    return [
        f"{RESULTS}/probes/{task}/layer-{layer}.tsv"
        for task in (config["probes"]["tasks"] if tasks is None else tasks)
        for layer in rcfg.probe_layers(config, task)
    ]


def cross_modal_tasks():
    """Probe tasks with cross-modal probes (they get a layer x layer transfer matrix)."""
    return [t for t, d in config["probes"]["tasks"].items() if d.get("cross_modal")]


def attribute_tasks():
    """Probe tasks on image-attribute datasets (brightness, redness, ...), decoder and vision tower."""
    return [
        t
        for t, d in config["probes"]["tasks"].items()
        if config["datasets"][d["dataset"]]["modality"] == "attribute"
    ]


def vision_tasks():
    """Probe tasks that read vision-tower streams only (their layer axis is the tower's blocks)."""
    return [
        t
        for t in config["probes"]["tasks"]
        if not any(
            rcfg.model_spec(config, m).reads_text for m in rcfg.task_models(config, t)
        )
    ]


def curve_tasks():
    """Label probe tasks with a learning curve (train_fractions set)."""
    if not config["probes"]["settings"].get("train_fractions"):
        return []
    return [
        t
        for t, d in config["probes"]["tasks"].items()
        if d.get("target", "label") == "label"
    ]


def probe_figures():
    """The probe companion figures this config has something to draw in."""
    figs = {
        "cross_modal_matrix": cross_modal_tasks(),
        "attribute_probes": attribute_tasks(),
        "learning_curves": curve_tasks(),
    }
    return [f"{RESULTS}/figs/{name}.pdf" for name, tasks in figs.items() if tasks]


def cross_layer_tables():
    return [f"{RESULTS}/probes/{t}/cross_modal_layers.tsv" for t in cross_modal_tasks()]


def cross_layer_inputs(wc):
    """Saved fold probes of every layer of a task, and the activations of its cross-modal models."""
    task = config["probes"]["tasks"][wc.task]
    return {
        "weights": [
            f"{RESULTS}/probes/{wc.task}/weights/layer-{layer}"
            for layer in rcfg.probe_layers(config, wc.task)
        ],
        **{m: activations(m, task["dataset"]) for m in task.get("cross_modal", [])},
    }


def probe_inputs(wc):
    """Activation folders of every model a probe task reads, named by model."""
    task = config["probes"]["tasks"][wc.task]
    return {
        m: activations(m, task["dataset"]) for m in rcfg.task_models(config, wc.task)
    }


def token_partners(model, dataset):
    """Models compared with ``model`` on ``dataset``'s text: their token ids must equal this model's."""
    out = {}
    for c in config["comparisons"].values():
        if c["dataset"] == dataset and model in (c["base"], c["adapted"]):
            other = c["adapted"] if c["base"] == model else c["base"]
            spec = rcfg.model_spec(config, other)
            out[other] = {
                "spec": canon(config["models"][other]),
                "location": spec.location(DATA),
            }
    return canon(out)


def token_partner_dirs(model, dataset):
    """Local folders of those models (generated demo models must exist before the check)."""
    return [
        p["location"]
        for name, p in token_partners(model, dataset).items()
        if rcfg.model_spec(config, name).source != "hub"
    ]


# -- SAE-feature analyses (rules/sae_features.smk) ----------------------------------------------------------
CLASS_FEATURE_KEYS = ("sae", "dataset", "top_k", "max_image_fraction", "n_top")
FEATURE_PROBE_KEYS = (
    "sae",
    "dataset",
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


def sae_feature_params(analysis, keys):
    """The keys of one sae_features entry that a rule reads (so that others never rerun it)."""
    a = config["sae_features"][analysis]
    return canon({k: a[k] for k in keys if k in a})


def class_feature_inputs(wc):
    """Codes (token-level, per layer) and manifest (labels, class names, split) of one analysis."""
    a = config["sae_features"][wc.analysis]
    return {
        "codes": codes_dir(a["sae"], wc.model, a["dataset"]),
        "manifest": manifest(a["dataset"]),
    }


def sae_feature_inputs(wc):
    """The same plus the activations (pooled means: the raw-activation reference)."""
    a = config["sae_features"][wc.analysis]
    return class_feature_inputs(wc) | {"acts": activations(wc.model, a["dataset"])}


def all_sae_feature_tables(kind):
    """kind: class_features or probe."""
    return [
        f"{RESULTS}/sae_features/{analysis}/{model}/layer-{layer}.{kind}.tsv"
        for analysis, model, layer in rcfg.sae_feature_jobs(config)
    ]


def sae_feature_targets():
    """The SAE-feature figure and every class-features table, for the default target (none when
    sae_features is empty)."""
    if not rcfg.sae_feature_jobs(config):
        return []
    tables = all_sae_feature_tables("class_features")
    return [f"{RESULTS}/figs/sae_features.pdf"] + tables


onstart:
    # hub repos the run needs, checked once before the first job (not on dry runs); one message for all
    from repshift.config.preflight import preflight_hub

    preflight_hub(config)
