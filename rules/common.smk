"""Validation, wildcard constraints and small input functions shared by every stage (no rules here)."""

from pathlib import Path

from snakemake.utils import validate

from repshift import config as rcfg
from repshift.provenance import code_hash as _code_hash

validate(config, "config.schema.yaml")
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


def step_hash(step, *modules):
    """Content hash of a step function and the repshift modules it calls: editing them reruns exactly
    that step's jobs."""
    return _code_hash((f"steps:{step}",) + modules)


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


def sae_outputs(comparison, role):
    c = config["comparisons"][comparison]
    return f"{RESULTS}/sae/{c['sae']}/{c[role]}/{c['dataset']}"


def all_shift_tables():
    return [f"{RESULTS}/sae/shift/{c}.tsv" for c in config["comparisons"]]


def all_code_dirs():
    return sorted(
        {
            f"{RESULTS}/sae/{sae}/{model}/{dataset}"
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
