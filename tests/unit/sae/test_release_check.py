"""Pretrained SAE releases checked offline against the layer convention (layer L = blocks.L.hook_resid_post),
with the real entries of sae-lens's pretrained directory, and the expected_average_only_in scaling folded the
way sae-lens folds it."""

import copy
from pathlib import Path

import pytest
import torch
import yaml
from sae_lens import StandardSAE, StandardSAEConfig

from repshift import config as rcfg
from repshift.config.checks import validate_config
from repshift.config.specs import ConfigError
from repshift.sae.load import (
    check_release_layer,
    check_sae_compat,
    fold_estimated_norm_scaling,
    release_entry,
)

ROOT = Path(__file__).resolve().parents[3]


def test_gemma_2b_jb_entries_read_block_outputs():
    e = release_entry("gemma-2b-res-jb", "blocks.6.hook_resid_post")
    assert (e.hook_name, e.block, e.layer, e.model) == ("blocks.6.hook_resid_post", 6, 6, "gemma-2b")
    assert e.norm_scaling_factor is None
    # block 12 was trained with normalize_activations=expected_average_only_in: sae-lens lists its factor
    e12 = check_release_layer("gemma-2b-res-jb", "blocks.{layer}.hook_resid_post", 12)
    assert e12.norm_scaling_factor == pytest.approx(0.21381938399317255)
    assert (
        check_release_layer("gemma-2b-it-res-jb", "blocks.{layer}.hook_resid_post", 12).model == "gemma-2b-it"
    )


def test_gemma_scope_ids_map_to_resid_post():
    e = release_entry("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical")
    assert (e.hook_name, e.layer) == ("blocks.12.hook_resid_post", 12)


def test_resid_pre_sae_is_one_layer_earlier_and_refused_at_its_block():
    # gpt2-small-res-jb reads the residual entering block L = the output of block L-1
    assert release_entry("gpt2-small-res-jb", "blocks.6.hook_resid_pre").layer == 5
    assert release_entry("gpt2-small-res-jb", "blocks.0.hook_resid_pre").layer is None  # the embeddings
    with pytest.raises(ValueError, match=r"hook_resid_pre.*repshift layer 5"):
        check_release_layer("gpt2-small-res-jb", "blocks.{layer}.hook_resid_pre", 6, where="saes.gpt2")


def test_unknown_release_and_id_name_what_exists():
    with pytest.raises(ValueError, match=r"gemma-2b-res-jbb.*did you mean.*gemma-2b-res-jb"):
        release_entry("gemma-2b-res-jbb", "blocks.6.hook_resid_post")
    with pytest.raises(ValueError, match=r"blocks\.7\.hook_resid_post.*blocks\.0\.hook_resid_post"):
        check_release_layer("gemma-2b-res-jb", "blocks.{layer}.hook_resid_post", 7)


def test_check_config_refuses_a_release_whose_hook_is_off_by_one():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    validate_config(cfg, str(ROOT / "rules" / "config.schema.yaml"))
    bad = copy.deepcopy(cfg)
    bad["saes"]["gemma-scope"] = {
        "source": "pretrained",
        "release": "gpt2-small-res-jb",
        "id_template": "blocks.{layer}.hook_resid_pre",
        "layers": [3],
    }
    bad["extraction"]["fused_sae"] = None
    bad["sae_features"] = {}
    bad["steering"] = {}  # its SAE check (layers 6, 12, 18) would speak first
    with pytest.raises(ConfigError, match=r"saes\.gemma-scope: layer 3 .*blocks\.3\.hook_resid_pre"):
        rcfg.check_config(bad)


def _scaled_sae():
    cfg = StandardSAEConfig(d_in=4, d_sae=3, normalize_activations="expected_average_only_in")
    sae = StandardSAE(cfg)
    sae.cfg.metadata.hook_name = "blocks.2.hook_resid_post"
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(4)[:, :3])
        sae.W_dec.copy_(torch.eye(4)[:3])
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_unfolded_norm_scaling_is_refused_then_folded_like_sae_lens():
    sae = _scaled_sae()
    with pytest.raises(ValueError, match="expected_average_only_in"):
        check_sae_compat(sae, d_model=4, layer=2)
    # rows of norm 4 and 8: mean norm 6, factor sqrt(4) / 6 = 1/3
    acts_ND = torch.tensor([[4.0, 0, 0, 0], [0, 8.0, 0, 0]])
    assert fold_estimated_norm_scaling(sae, acts_ND) == pytest.approx(1 / 3)
    check_sae_compat(sae, d_model=4, layer=2)
    assert sae.cfg.normalize_activations == "none"
    # encode now sees x / 3: the first row's latent 0 is 4/3
    torch.testing.assert_close(sae.encode(acts_ND)[0], torch.tensor([4 / 3, 0.0, 0.0]))
    with pytest.raises(ValueError, match="nothing to fold"):
        fold_estimated_norm_scaling(sae, acts_ND)
