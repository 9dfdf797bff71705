"""Config validation: the schema catches typos, check_config catches bad references."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from repshift import config as rcfg

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = str(ROOT / "rules" / "config.schema.yaml")


def load(name):
    cfg = yaml.safe_load((ROOT / name).read_text())
    validate(cfg, SCHEMA)
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
    with pytest.raises(Exception) as err:
        validate(cfg, SCHEMA)
    assert needle in str(err.value)


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
