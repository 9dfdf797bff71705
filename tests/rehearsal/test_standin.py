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
    assert vlm.config.vision_config.image_size == 224  # the real input size
    assert vlm.config.vision_config.image_size // vlm.config.vision_config.patch_size == 4  # 16 image tokens
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


# --- the study presets' stand-ins (config/llava-gemma.yaml, config/line-of-sight.yaml) ---------------------------

PRESET_MODELS = {
    "gemma": (
        {
            "llm": {"family": "causal-lm", "source": "hub", "id": "google/gemma-2b", "num_layers": 18},
            "vlm": {"family": "llava", "source": "hub", "id": "Intel/llava-gemma-2b", "num_layers": 18},
            "vision": {
                "family": "llava",
                "source": "hub",
                "id": "Intel/llava-gemma-2b",
                "stream": "vision",
                "num_layers": 24,
            },
        },
        ("GemmaForCausalLM", "LlavaForConditionalGeneration", "gemma"),
    ),
    "mistral": (
        {
            "llm": {
                "family": "causal-lm",
                "source": "hub",
                "id": "mistralai/Mistral-7B-Instruct-v0.2",
                "num_layers": 32,
            },
            "vlm": {
                "family": "llava-next",
                "source": "hub",
                "id": "llava-hf/llava-v1.6-mistral-7b-hf",
                "num_layers": 32,
            },
        },
        ("MistralForCausalLM", "LlavaNextForConditionalGeneration", "mistral"),
    ),
}


@pytest.mark.parametrize("arch", sorted(PRESET_MODELS))
def test_preset_models_load_through_the_adapter_with_their_real_architecture(hub_cache, tmp_path, arch):
    from repshift.config.specs import model_spec
    from repshift.models.adapter import load_adapter

    models, (llm_cls, vlm_cls, text_type) = PRESET_MODELS[arch]
    cfg = {"models": models}
    build_standin_models(hub_cache, cfg, tmp_path / "work")
    llm = load_adapter(model_spec(cfg, "llm"), device="cpu", dtype="float32")
    vlm = load_adapter(model_spec(cfg, "vlm"), device="cpu", dtype="float32")
    depth = models["llm"]["num_layers"]
    assert type(llm.model).__name__ == llm_cls  # not a Gemma-2 under another name
    assert type(vlm.model).__name__ == vlm_cls
    assert vlm.model.config.text_config.model_type == text_type
    assert (llm.num_layers, vlm.num_layers, llm.d_model) == (depth, depth, 64)
    # the VLM's decoder is the LLM's, blocks from depth // 2 on perturbed
    llm_blocks, vlm_blocks = llm.layers, vlm.layers
    for idx, same in ((0, True), (depth // 2 - 1, True), (depth // 2, False), (depth - 1, False)):
        w_llm = llm_blocks[idx].self_attn.q_proj.weight
        w_vlm = vlm_blocks[idx].self_attn.q_proj.weight
        assert torch.equal(w_llm, w_vlm) is same, idx
    if "vision" in models:
        tower = load_adapter(model_spec(cfg, "vision"), device="cpu", dtype="float32")
        assert tower.num_layers == 24 and type(tower.model.model.vision_tower).__name__ == "CLIPVisionModel"


def test_gemma1_standin_scales_its_norms_by_one_plus_weight(tmp_path):
    """Gemma-1's RMSNorm multiplies by (1 + weight): the stand-in's norm weights sit near 0, Mistral's near 1."""
    from transformers import AutoModelForCausalLM

    from repshift.demo.models import build_demo_gemma, build_demo_mistral

    gemma = AutoModelForCausalLM.from_pretrained(build_demo_gemma(tmp_path / "g", num_hidden_layers=2))
    mistral = AutoModelForCausalLM.from_pretrained(build_demo_mistral(tmp_path / "m", num_hidden_layers=2))
    assert abs(float(gemma.model.norm.weight.detach().mean())) < 0.1
    assert abs(float(mistral.model.norm.weight.detach().mean()) - 1.0) < 0.1
    assert mistral.config.sliding_window is None  # Mistral-7B-Instruct-v0.2 has none


JB = "gemma-2b-res-jb"
#: sae-lens's pretrained_saes.yaml, gemma-2b-res-jb, blocks.12.hook_resid_post: norm_scaling_factor
JB_12_FACTOR = 0.21381938399317255


def test_jb_saes_load_through_sae_lens_in_their_own_format(hub_cache):
    from sae_lens import SAE
    from safetensors.numpy import load_file

    ids = ["blocks.6.hook_resid_post", "blocks.12.hook_resid_post"]
    snapshot = build_standin_saes(hub_cache, JB, ids, d_in=64, d_sae=STANDIN_D_SAE)
    folder12 = snapshot / "gemma_2b_blocks.12.hook_resid_post_16384"  # the path the release lists
    assert sorted(p.name for p in folder12.iterdir()) == [
        "cfg.json",
        "sae_weights.safetensors",
        "sparsity.safetensors",
    ]
    w6 = load_file(
        snapshot / "gemma_2b_blocks.6.hook_resid_post_16384_anthropic_fast_lr" / "sae_weights.safetensors"
    )
    w12 = load_file(folder12 / "sae_weights.safetensors")
    sae6 = SAE.from_pretrained(JB, ids[0])  # no width override: cfg.json carries d_in / d_sae
    sae12 = SAE.from_pretrained(JB, ids[1])
    assert type(sae6).__name__ == "StandardSAE"
    assert (sae12.cfg.d_in, sae12.cfg.d_sae) == (64, 512)
    assert sae12.cfg.metadata.hook_name == "blocks.12.hook_resid_post"
    # block 6: no normalisation, weights as written; block 12: sae-lens folded the release's factor
    np.testing.assert_array_equal(sae6.W_enc.detach().numpy(), w6["W_enc"])
    np.testing.assert_allclose(sae12.W_enc.detach().numpy(), w12["W_enc"] * JB_12_FACTOR, rtol=1e-6)
    np.testing.assert_allclose(sae12.W_dec.detach().numpy(), w12["W_dec"] / JB_12_FACTOR, rtol=1e-6)
    assert sae12.cfg.normalize_activations == "none"  # folded


def test_jb_it_sae_has_no_normalisation_and_passes_the_layer_check(hub_cache):
    import json

    from sae_lens import SAE

    from repshift.sae.load import check_release_layer

    release = "gemma-2b-it-res-jb"
    snapshot = build_standin_saes(hub_cache, release, ["blocks.12.hook_resid_post"], d_in=64, d_sae=512)
    cfg = json.loads((snapshot / "gemma_2b_it_blocks.12.hook_resid_post_16384" / "cfg.json").read_text())
    assert (cfg["normalize_activations"], cfg["model_name"]) == ("none", "gemma-2b-it")  # no factor listed
    assert SAE.from_pretrained(release, "blocks.12.hook_resid_post").cfg.d_in == 64
    assert check_release_layer(release, "blocks.{layer}.hook_resid_post", 12).layer == 12


def test_sae_shape_env_holds_several_releases():
    from repshift.demo.standin import parse_sae_shapes, sae_shape_env_value

    assert parse_sae_shapes("a=64,512;b=32,256") == {"a": (64, 512), "b": (32, 256)}
    assert parse_sae_shapes("") == {}
    with pytest.raises(ValueError, match="REPSHIFT_STANDIN_SAE_SHAPE"):
        parse_sae_shapes("a=64")
    summary = {
        "saes": {
            "scope": {"release": RELEASE, "d_in": 64, "d_sae": 512, "shape_override": True},
            "jb": {"release": JB, "d_in": 64, "d_sae": 512, "shape_override": False},
        }
    }
    assert sae_shape_env_value(summary) == f"{RELEASE}=64,512"


def test_fetched_jb_sae_keeps_its_hook_and_folded_scale_on_reload(hub_cache, tmp_path):
    """fetch_pretrained_sae -> load_sae round trip of a pre-6.0 sae-lens release: the saved cfg must not be
    converted a second time (that dropped metadata.hook_name, so every spliced/encode job refused the SAE)."""
    from safetensors.numpy import load_file

    from repshift.sae.load import fetch_pretrained_sae, load_sae, sae_hook_name

    snapshot = build_standin_saes(hub_cache, JB, ["blocks.12.hook_resid_post"], d_in=64, d_sae=STANDIN_D_SAE)
    written = load_file(snapshot / "gemma_2b_blocks.12.hook_resid_post_16384" / "sae_weights.safetensors")
    sae = load_sae(fetch_pretrained_sae(JB, "blocks.12.hook_resid_post", tmp_path / "layer-12"))
    assert sae_hook_name(sae) == "blocks.12.hook_resid_post"
    assert sae.cfg.normalize_activations == "none"
    np.testing.assert_allclose(sae.W_enc.detach().numpy(), written["W_enc"] * JB_12_FACTOR, rtol=1e-6)


def test_sae_lens_format_calibration_fires_three_in_a_hundred_after_the_release_scaling():
    from repshift.demo.standin import sae_lens_format_files

    acts_ND = np.random.default_rng(2).normal(size=(100, 64)).astype(np.float32)
    cfg, weights, _ = sae_lens_format_files(
        "gemma-2b-res-jb", "blocks.12.hook_resid_post", 64, 512, 0, acts_ND
    )
    assert cfg["normalize_activations"] == "expected_average_only_in"
    # sae-lens multiplies block 12's inputs by the release's listed factor before the ReLU encoder
    pre_NS = (acts_ND * 0.21381938399317255) @ weights["W_enc"] + weights["b_enc"]
    assert ((pre_NS > 0).sum(axis=0) == 3).all()
