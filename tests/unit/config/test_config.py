"""Config validation: the schema catches typos (one readable line per error), check_config catches bad
references and layers a model does not have."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.cli import parse_config
from snakemake.utils import update_config

from repshift import config as rcfg
from repshift.config.checks import validate_config

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = str(ROOT / "rules" / "config.schema.yaml")


def load(name):
    cfg = yaml.safe_load((ROOT / name).read_text())
    validate_config(cfg, SCHEMA)
    return cfg


@pytest.fixture(params=["config.yaml", "config/demo.yaml"])
def cfg(request):
    return load(request.param)


def test_shipped_configs_validate_and_check(cfg):
    rcfg.check_config(cfg)
    assert rcfg.extraction_pairs(cfg)


def test_real_config_is_the_real_experiment():
    cfg = load("config.yaml")
    assert cfg["models"]["gemma2-2b"]["id"] == "google/gemma-2-2b"
    assert cfg["models"]["paligemma2-3b"]["id"] == "google/paligemma2-3b-pt-224"
    assert cfg["saes"]["gemma-scope"]["release"] == "gemma-scope-2b-pt-res-canonical"
    assert cfg["saes"]["gemma-scope"]["id_template"].format(layer=12) == "layer_12/width_16k/canonical"
    assert rcfg.model_layers(cfg, "gemma2-2b") == list(range(26))
    assert rcfg.comparison_layers(cfg, "gemma-vs-paligemma") == list(range(26))


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda c: c.__setitem__("modles", c.pop("models")), "modles"),
        (lambda c: c["extraction"].__setitem__("batchsize", 4), "batchsize"),
        (lambda c: c["extraction"].__setitem__("batch_size", "eight"), "eight"),
        (lambda c: c["models"].__setitem__("Gemma_2B", c["models"].pop("gemma2-2b")), "Gemma_2B"),
        (lambda c: c["models"]["gemma2-2b"].__setitem__("family", "gpt"), "gpt"),
    ],
)
def test_schema_rejects_typos_naming_the_key(mutate, needle):
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    mutate(cfg)
    with pytest.raises(rcfg.ConfigError) as err:
        validate_config(cfg, SCHEMA)
    assert needle in str(err.value)
    msg = str(err.value)
    assert (
        len(msg.splitlines()) <= 3 and "description" not in msg
    )  # a line per error (a rename makes two), no schema


def test_schema_errors_are_one_line_each_without_the_schema():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["modles"] = {}
    cfg["coco"]["source"] = "downlaod"
    cfg["seed"] = "x"
    with pytest.raises(rcfg.ConfigError) as err:
        validate_config(cfg, SCHEMA)
    lines = str(err.value).splitlines()
    assert lines[0] == f"the config does not match {SCHEMA} (3 errors):"
    assert lines[1:] == [
        "  (top level): unknown key 'modles' (allowed: cifar100, coco, comparisons, datasets, extraction, figures, "
        "imagenet, models, paths, probes, sae_features, sae_training, saes, seed, spliced, stats, steering)",
        "  coco.source: 'downlaod' is not allowed (allowed: download, path, synthetic)",
        "  seed: expected integer, got 'x'",
    ]


def test_validate_config_fills_defaults_like_snakemake():
    cfg = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    del cfg["seed"], cfg["coco"]["split"]
    cfg["extraction"].pop("fused_sae", None)
    validate_config(cfg, SCHEMA)
    assert cfg["seed"] == 0 and cfg["coco"]["split"] == "val2017" and cfg["extraction"]["fused_sae"] is None


@pytest.mark.parametrize("word", ["null", "None", "~"])
def test_command_line_null_unsets_a_nullable_key(word):
    """`--config 'extraction={fused_sae: null}'` passes the string 'null' (Snakemake's own parser below)."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    override = parse_config([f"extraction={{fused_sae: {word}}}"])
    assert override == {"extraction": {"fused_sae": word}}  # what Snakemake hands the workflow
    update_config(cfg, override)
    validate_config(cfg, SCHEMA)
    assert cfg["extraction"]["fused_sae"] is None and cfg["extraction"]["shards"] == 1  # merged, not replaced
    assert rcfg.fused_pairs(cfg) == []


def test_null_word_stays_a_string_where_null_is_not_allowed():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["coco"]["split"] = "null"
    with pytest.raises(
        rcfg.ConfigError, match=r"coco.split: 'null' is not allowed \(allowed: val2017, train2017\)"
    ):
        validate_config(cfg, SCHEMA)


def test_curve_layer_no_probed_model_has_is_refused():
    cfg = load("config/demo.yaml")
    cfg["probes"]["settings"]["curve_layers"] = [2, 9]
    with pytest.raises(rcfg.ConfigError) as err:
        rcfg.check_config(cfg)
    msg = str(err.value)
    assert msg.startswith("probes.settings.curve_layers: layer 9 is not extracted for any probed model")
    assert (
        "demo-llm (6 blocks, extracted 0-5)" in msg
        and "demo-paligemma-vision (2 blocks, extracted 0-1)" in msg
    )
    cfg["probes"]["settings"]["curve_layers"] = [2, 5]
    rcfg.check_config(cfg)


def test_analysis_layer_the_model_does_not_have():
    cfg = load("config/demo.yaml")
    cfg["sae_features"]["cifar-demo"]["layers"] = [1, 7]
    with pytest.raises(
        rcfg.ConfigError,
        match=r"sae_features.cifar-demo.layers: layer 7 requested but demo-paligemma has 6 blocks \(0-5\)",
    ):
        rcfg.check_config(cfg)


def test_layer_the_model_does_not_have():
    cfg = load("config.yaml")
    cfg["extraction"]["layers"] = [3, 30]
    with pytest.raises(rcfg.ConfigError, match=r"layer 30 requested but gemma2-2b has 26 blocks \(0-25\)"):
        rcfg.check_config(cfg)


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda c: c["comparisons"]["gemma-vs-paligemma"].__setitem__("base", "gemma-7b"), "gemma-7b"),
        (lambda c: c["comparisons"]["gemma-vs-paligemma"].__setitem__("sae", "nope"), "nope"),
        (lambda c: c["probes"]["tasks"]["categories"].__setitem__("cross_modal", ["gemma2-2b"]), "not a VLM"),
        (lambda c: c["coco"].__setitem__("source", "path"), "coco.root"),
        (lambda c: c["saes"]["gemma-scope"].pop("release"), "release"),
        (lambda c: c["models"]["gemma2-2b"].pop("id"), "needs `id`"),
    ],
)
def test_cross_references_are_checked(mutate, needle):
    cfg = copy.deepcopy(load("config.yaml"))
    mutate(cfg)
    with pytest.raises(rcfg.ConfigError, match=needle):
        rcfg.check_config(cfg)


def test_demo_perturb_from_range():
    cfg = load("config/demo.yaml")
    cfg["models"]["demo-paligemma"]["demo"]["perturb_from"] = 9
    with pytest.raises(rcfg.ConfigError, match=r"perturb_from must be in 0..6"):
        rcfg.check_config(cfg)


def test_tokens_only_where_the_sae_stage_reads_them():
    cfg = load("config/demo.yaml")
    assert rcfg.needs_tokens(cfg, "demo-llm", "demo-categories")
    cfg["comparisons"] = {}
    cfg["saes"]["demo-sae"]["train"]["dataset"] = "other"
    assert not rcfg.needs_tokens(cfg, "demo-llm", "demo-categories")


def test_image_dataset_on_text_model_is_refused():
    cfg = load("config.yaml")
    cfg["datasets"]["coco-categories"]["modality"] = "image"
    cfg["comparisons"] = {}
    with pytest.raises(rcfg.ConfigError, match="text-only model"):
        rcfg.check_config(cfg)


def test_fused_sae_covers_every_pair_it_encodes_and_keeps_no_token_activations():
    """The real config encodes inside extraction: comparisons and SAE-feature analyses alike, so no dense
    token-level activations are stored for them (CIFAR-100 on PaliGemma would be ~300 GB)."""
    cfg = load("config.yaml")
    assert rcfg.fused_sae(cfg) == "gemma-scope"
    pairs = set(rcfg.fused_pairs(cfg))
    assert set(rcfg.sae_models(cfg, "gemma-scope")) <= pairs
    assert {(m, d) for s, m, d in rcfg.sae_feature_pairs(cfg)} <= pairs
    assert not any(rcfg.needs_tokens(cfg, m, d) for m, d in rcfg.extraction_pairs(cfg))
    cfg["extraction"]["fused_sae"] = None
    assert rcfg.fused_pairs(cfg) == []
    assert all(rcfg.needs_tokens(cfg, m, d) for m, d in pairs)


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda s: s.update(task="nope"), r"steering.task: unknown probe task 'nope'"),
        (
            lambda s: s.update(models=["demo-paligemma-vision"]),
            r"steering.models: demo-paligemma-vision has no saved",
        ),
        (
            lambda s: s.update(layers=[2, 7]),
            r"steering.layers: layer 7 requested but demo-paligemma has 6 blocks",
        ),
        (
            lambda s: s["pairs"].update({"cat-cow": {"source": "cat", "target": "cow"}}),
            r"steering.pairs.cat-cow.target: 'cow' is not a class of dataset demo-categories",
        ),
        (
            lambda s: s["pairs"].update({"cat-cat": {"source": "cat", "target": "cat"}}),
            r"steering.pairs.cat-cat",
        ),
        (
            lambda s: s.update(heldout_fold=5),
            r"steering.heldout_fold: 5 but dataset demo-categories has 5 folds",
        ),
        (lambda s: s.update(sae="nope"), r"steering.sae: unknown SAE 'nope'"),
        (
            lambda s: s.update(class_features="nope"),
            r"steering.class_features: unknown sae_features analysis",
        ),
    ],
)
def test_steering_references_are_checked(mutate, needle):
    cfg = copy.deepcopy(load("config/demo.yaml"))
    mutate(cfg["steering"])
    with pytest.raises(rcfg.ConfigError, match=needle):
        rcfg.check_config(cfg)


def test_steering_without_models_is_not_checked():
    cfg = copy.deepcopy(load("config/demo.yaml"))
    cfg["steering"].update(models=[], task="nope")
    rcfg.check_config(cfg)
