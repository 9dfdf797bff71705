"""The rehearsal's stand-in hub: real repo ids resolve offline from the cache; SAEs load through sae-lens."""

import numpy as np
import pytest
import torch

from repshift.demo.coco import plan_from_counts
from repshift.demo.standin import (
    STANDIN_D_SAE,
    build_standin_models,
    build_standin_saes,
    fake_commit,
    install_sae_shape_override,
)

RELEASE = "gemma-scope-2b-pt-res-canonical"
CONFIG = {
    "models": {
        "llm": {"family": "causal-lm", "source": "hub", "id": "google/gemma-2-2b", "num_layers": 2},
        "vlm": {"family": "paligemma", "source": "hub", "id": "google/paligemma2-3b-pt-224", "num_layers": 2},
        "vision": {
            "family": "paligemma",
            "source": "hub",
            "id": "google/paligemma2-3b-pt-224",
            "stream": "vision",
            "num_layers": 3,
        },
        "local": {"family": "causal-lm", "source": "path", "path": "elsewhere", "num_layers": 2},
    }
}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty HF cache that huggingface_hub (offline) reads instead of the user's."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def sae_override():
    """Install the stand-in widths on the release; restore sae-lens's cached directory afterwards."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    lookup = get_pretrained_saes_directory()[RELEASE]
    before = lookup.config_overrides
    install_sae_shape_override(RELEASE, 64, STANDIN_D_SAE)
    yield
    lookup.config_overrides = before


def test_models_load_by_real_repo_id_offline(hub_cache, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    repos = build_standin_models(hub_cache, CONFIG, tmp_path / "work")
    assert repos == ["google/gemma-2-2b", "google/paligemma2-3b-pt-224"]  # the path model gets no stand-in
    ref = hub_cache / "models--google--gemma-2-2b" / "refs" / "main"
    assert ref.read_text() == fake_commit("google/gemma-2-2b")
    llm = AutoModelForCausalLM.from_pretrained("google/gemma-2-2b", revision="main")
    assert (llm.config.num_hidden_layers, llm.config.hidden_size) == (2, 64)
    vlm = AutoModelForImageTextToText.from_pretrained("google/paligemma2-3b-pt-224", revision="main")
    assert vlm.config.text_config.num_hidden_layers == 2
    assert vlm.config.vision_config.num_hidden_layers == 3  # the vision stream's num_layers
    assert vlm.config.vision_config.image_size // vlm.config.vision_config.patch_size == 16  # 256 tokens
    with pytest.raises(OSError):  # nothing else is in the cache: offline lookups of other ids fail
        AutoModelForCausalLM.from_pretrained("google/gemma-2-9b")


def test_sae_loads_through_sae_lens_from_pretrained(hub_cache, sae_override):
    from sae_lens import SAE

    ids = ["layer_0/width_16k/canonical", "layer_1/width_16k/canonical"]
    snapshot = build_standin_saes(hub_cache, RELEASE, ids, d_in=64, d_sae=STANDIN_D_SAE)
    # the folder pretrained_saes.yaml maps layer_1's canonical id to, in the repo it names
    params = np.load(snapshot / "layer_1" / "width_16k" / "average_l0_102" / "params.npz")
    sae = SAE.from_pretrained(RELEASE, ids[1])
    assert type(sae).__name__ == "JumpReLUSAE"
    assert (sae.cfg.d_in, sae.cfg.d_sae) == (64, 512)
    assert sae.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    np.testing.assert_array_equal(sae.W_dec.detach().numpy(), params["W_dec"])
    # x = decoder row 3 (unit norm): pre-activation of latent 3 is 1 > threshold 0.05, so code 3 is 1.0
    code = sae.encode(torch.from_numpy(params["W_dec"][3:4]))
    assert float(code.detach()[0, 3]) == pytest.approx(1.0, abs=1e-5)


def test_sae_without_the_width_override_does_not_load(hub_cache):
    from sae_lens import SAE

    build_standin_saes(hub_cache, RELEASE, ["layer_0/width_16k/canonical"], d_in=64, d_sae=STANDIN_D_SAE)
    with pytest.raises(RuntimeError, match="size mismatch"):  # the loader's hard-coded 2304 x 16384
        SAE.from_pretrained(RELEASE, "layer_0/width_16k/canonical")


def test_plan_from_counts_hits_every_count_with_at_most_two_per_image():
    plan = plan_from_counts(4, {"person": 3, "cat": 2}, np.random.default_rng(0))
    assert sum("person" in p for p in plan) == 3
    assert sum("cat" in p for p in plan) == 2
    assert sorted(len(p) for p in plan) == [1, 1, 1, 2]  # one empty image left, so one cat must join a person
    with pytest.raises(ValueError, match="zebra"):
        plan_from_counts(4, {"zebra": 1}, np.random.default_rng(0))


def test_calibrated_thresholds_fire_each_latent_on_three_in_a_hundred_samples():
    from repshift.demo.standin import gemma_scope_params

    acts_ND = np.random.default_rng(1).normal(size=(100, 8)).astype(np.float32)
    params = gemma_scope_params(8, 16, seed=0, acts_ND=acts_ND)
    pre_NS = acts_ND @ params["W_enc"] + params["b_enc"]
    # the 0.97 quantile of 100 samples lies between the 97th and 98th smallest: 3 samples are above it
    assert ((pre_NS > params["threshold"]).sum(axis=0) == 3).all()
    assert (gemma_scope_params(8, 16, seed=0)["threshold"] == np.float32(0.05)).all()  # uncalibrated


def test_residual_samples_are_block_outputs_without_bos(tmp_path):
    from transformers import AutoModelForCausalLM

    from repshift.demo.models import build_demo_llm
    from repshift.demo.standin import residual_samples

    model_dir = build_demo_llm(tmp_path / "llm", num_hidden_layers=2)
    ids_BT = torch.tensor([[2, 40, 41, 42, 43], [2, 50, 51, 52, 53]])
    samples = residual_samples(model_dir, ids_BT)
    assert sorted(samples) == [0, 1] and samples[1].shape == (2 * 4, 64)  # 2 blocks; BOS left out of 5
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        hidden = model(input_ids=ids_BT, output_hidden_states=True).hidden_states
    # layer 0 is block 0's output (the second hidden state, not the embedding), rows in (sequence, position) order
    np.testing.assert_allclose(samples[0], hidden[1][:, 1:].reshape(8, 64).numpy(), rtol=1e-5, atol=1e-6)
    assert samples[1][4] == pytest.approx(hidden[2][1, 1].numpy(), rel=1e-5, abs=1e-6)
    assert len(residual_samples(model_dir, n_seqs=3, seq_len=4)[0]) == 3 * 3
