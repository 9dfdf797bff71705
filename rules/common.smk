"""Validation, wildcard constraints and one-line wrappers binding ``config`` to the tested functions of
repshift.config.targets (which jobs and inputs exist) and repshift.formats.layout (every results path). No rules.
"""

from pathlib import Path

from repshift import config as rcfg
from repshift.config import stats_targets
from repshift.config import steering as steering_targets
from repshift.config import sae_training as ST
from repshift.config import targets as T
from repshift.figures import captions as FC
from repshift.formats import layout
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
    layout.activation_shard_dir(RESULTS, "{model}", "{dataset}", "{shard}")
    if SHARDS > 1
    else layout.activations_dir(RESULTS, "{model}", "{dataset}")
)
SHARD = ".shard-{shard}" if SHARDS > 1 else ""
BENCH = f"{RESULTS}/benchmarks"
CLASS_FEATURE_KEYS = T.CLASS_FEATURE_KEYS
FEATURE_PROBE_KEYS = T.FEATURE_PROBE_KEYS
canon = T.canon


def _names(section, **where):
    return T.name_regex(config, section, **where)


def step_hash(step):
    """Content hash of exactly the code a step runs (found from its imports): editing it reruns that step's jobs."""
    return step_code_hash(step)


def fused_code_hash(model, dataset):
    """Code hash of the fused encoding, only for fused pairs (SAE edits never rerun plain extractions)."""
    fused = (model, dataset) in rcfg.fused_pairs(config)
    return module_code_hash("sae.encode") if fused else ""


# -- config bound to repshift.config.targets ----------------------------------------------------------------
def coco_files():
    return T.coco_files(config)


def cifar_dir():
    return T.cifar_dir(config)


def dataset_images(dataset):
    return T.dataset_images(config, dataset)


def manifest(dataset):
    return T.manifest(config, dataset)


def model_dir(model):
    return T.model_dir(config, model)


def activations(model, dataset):
    return T.activations(config, model, dataset)


def sae_dir(sae, layer):
    return T.sae_dir(config, sae, layer)


def sae_dirs(sae, model):
    return T.sae_dirs(config, sae, model)


def sae_inputs(sae, model):
    return T.sae_inputs(config, sae, model)


def fused_inputs(model, dataset):
    return T.fused_inputs(config, model, dataset)


def fused_params(model, dataset):
    return T.fused_params(config, model, dataset)


def sae_outputs(comparison, role):
    return T.comparison_codes(config, comparison, role)


def all_shift_tables(latents=False):
    return T.all_shift_tables(config, latents=latents)


def all_spliced_tables():
    return T.all_spliced_tables(config)


def all_code_dirs():
    return T.all_code_dirs(config)


def all_probe_tables(tasks=None):
    return T.all_probe_tables(config, tasks)


def attribute_tasks():
    return T.attribute_tasks(config)


def pixel_baseline_inputs(wc):
    return T.pixel_baseline_inputs(config, wc.task)


def vision_tasks():
    return T.vision_tasks(config)


def curve_tasks():
    return T.curve_tasks(config)


def cross_layer_tables():
    return T.cross_layer_tables(config)


def cross_layer_inputs(wc):
    return T.cross_layer_inputs(config, wc.task)


def probe_inputs(wc):
    return T.probe_inputs(config, wc.task)


def token_partners(model, dataset):
    return T.token_partners(config, model, dataset)


def token_partner_dirs(model, dataset):
    return T.token_partner_dirs(config, model, dataset)


def sae_feature_params(analysis, keys):
    return T.sae_feature_params(config, analysis, keys)


def class_feature_inputs(wc):
    return T.class_feature_inputs(config, wc.analysis, wc.model)


def sae_feature_inputs(wc):
    return T.sae_feature_inputs(config, wc.analysis, wc.model)


def all_sae_feature_tables(kind):
    return T.all_sae_feature_tables(config, kind)


def steering_figure():
    """For the default target: the steering figure, or nothing when no steering job is configured."""
    return steering_targets.steering_targets(config)


def steering_params(wc):
    return steering_targets.steer_params(config, wc.model, wc.pair, wc.layer)


def vlm_sae_training():
    return canon(config.get("sae_training") or {})


def trained_base_sae_dir(wc):
    """The base model's SAE folder at this layer, or None when the config names none."""
    base = config["sae_training"]["models"][wc.model].get("base_sae")
    return sae_dir(base, wc.layer) if base else None


def trained_base_sae_input(wc):
    """What the base SAE's layer folder comes from: the demo family's folder (one job) or the layer folder."""
    base = config["sae_training"]["models"][wc.model].get("base_sae")
    return sae_inputs(base, wc.model) if base else []


def training_manifest():
    """The SAE-training dataset's manifest ([] when the config trains no SAE: the rules stay defined)."""
    st = config.get("sae_training") or {}
    return manifest(st["dataset"]) if st.get("models") else []


def training_images():
    st = config.get("sae_training") or {}
    return dataset_images(st["dataset"]) if st.get("models") else []


def palette():
    return FC.palette_params(config)


def figure_n(figure):
    return FC.figure_n(config, figure)


def figure_labels(figure, kind):
    """Labels of a report entry: which figure, and whether it is the figure (PNG) or its numbers (TSV)."""
    return {"figure": figure.replace("_", " "), "file": kind}
