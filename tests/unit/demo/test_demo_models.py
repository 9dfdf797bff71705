"""Tiny demo models: determinism, tokenizer, Auto-class round trips, and the known decoder ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from repshift.demo.models import (
    DEMO_CORPUS,
    DEMO_META_FILE,
    IMAGE_TOKEN,
    build_demo_llm,
    build_demo_tokenizer,
    build_demo_vlm,
    decoder_layers,
)
from repshift.demo.models import (
    VLM_ARCHS as ALL_VLM_ARCHS,
)
from repshift.models.families import FAMILIES  # noqa: E402

#: the VLM families built on the demo Gemma-2 LLM (Qwen2-VL and SmolVLM: tests/unit/models/test_families.py)
VLM_ARCHS = tuple(a for a in ALL_VLM_ARCHS if FAMILIES[a].demo_base == "gemma2")
N_LAYERS = 6
PERTURB_FROM = 3
IMAGE_SIZE = 32
PATCH_SIZE = 8
N_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
TEXTS = (
    "A photo of a cat sitting on a chair next to a dog with a red ball on the grass in the kitchen.",
    "Le chat est sur la table.",
    "猫がいます",
)
VLM_CLASSES = {
    "paligemma": "PaliGemmaForConditionalGeneration",
    "llava": "LlavaForConditionalGeneration",
    "llava-next": "LlavaNextForConditionalGeneration",
}


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    return tmp_path_factory.mktemp("demo_models")


@pytest.fixture(scope="session")
def llm_dir(demo_root):
    return build_demo_llm(demo_root / "llm", seed=0, num_hidden_layers=N_LAYERS)


@pytest.fixture(scope="session")
def vlm_dirs(demo_root, llm_dir):
    return {
        arch: build_demo_vlm(
            demo_root / arch,
            base_dir=llm_dir,
            arch=arch,
            perturb_from=PERTURB_FROM,
            seed=0,
            image_size=IMAGE_SIZE,
            patch_size=PATCH_SIZE,
        )
        for arch in VLM_ARCHS
    }


@pytest.fixture(scope="session")
def llm(llm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    model = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=torch.float32, attn_implementation="eager")
    return tokenizer, model.eval()


@pytest.fixture(scope="session")
def vlms(vlm_dirs):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    loaded = {}
    for arch, path in vlm_dirs.items():
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=torch.float32, attn_implementation="eager"
        )
        loaded[arch] = (processor, model.eval())
    return loaded


@pytest.fixture(scope="session")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8))  # not square, not 32


def _state(path):
    return load_file(str(path / "model.safetensors"))


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ------------------------------------------------------------------------------------------- determinism
def test_llm_same_seed_gives_identical_weights_and_tokenizer(demo_root, llm_dir):
    from transformers import AutoTokenizer

    again = build_demo_llm(demo_root / "llm-again", seed=0, num_hidden_layers=N_LAYERS)
    _assert_same_state(_state(llm_dir), _state(again))
    tok_a, tok_b = AutoTokenizer.from_pretrained(llm_dir), AutoTokenizer.from_pretrained(again)
    assert tok_a.get_vocab() == tok_b.get_vocab()
    for text in DEMO_CORPUS + TEXTS:
        assert tok_a(text).input_ids == tok_b(text).input_ids


def test_llm_different_seed_gives_different_weights(demo_root, llm_dir):
    other = _state(build_demo_llm(demo_root / "llm-seed1", seed=1, num_hidden_layers=N_LAYERS))
    base = _state(llm_dir)
    assert base.keys() == other.keys()
    assert not torch.equal(base["model.embed_tokens.weight"], other["model.embed_tokens.weight"])
    assert not torch.equal(
        base["model.layers.0.self_attn.q_proj.weight"], other["model.layers.0.self_attn.q_proj.weight"]
    )


@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_same_seed_gives_identical_weights(demo_root, llm_dir, vlm_dirs, arch):
    again = build_demo_vlm(
        demo_root / f"{arch}-again",
        base_dir=llm_dir,
        arch=arch,
        perturb_from=PERTURB_FROM,
        seed=0,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    _assert_same_state(_state(vlm_dirs[arch]), _state(again))
    meta = json.loads((again / DEMO_META_FILE).read_text())
    assert meta["arch"] == arch and meta["perturb_from"] == PERTURB_FROM
    assert meta["num_image_tokens"] == N_IMAGE_TOKENS


# ---------------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_special_ids_and_padding():
    tok = build_demo_tokenizer(vocab_size=512)
    assert type(tok).__name__ == "GemmaTokenizer"
    assert len(tok) == 512
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.image_token == IMAGE_TOKEN
    assert tok.convert_tokens_to_ids(IMAGE_TOKEN) == tok.image_token_id
    assert tok.padding_side == "left"
    # <image> is an added special token: never split, even inside text
    assert tok.encode(f"{IMAGE_TOKEN}a cat", add_special_tokens=False)[0] == tok.image_token_id
    batch = tok(["a cat", "a photo of a dog on a chair"], padding=True)
    assert batch.input_ids[0][0] == tok.pad_token_id and batch.attention_mask[0][0] == 0


@pytest.mark.parametrize(
    "text", TEXTS + ("Ünïcödé – emoji 🐱 and Ελληνικά", "tabs\tand\nnewlines  double space")
)
def test_tokenizer_bos_no_unk_round_trip(llm, text):
    tok, _ = llm
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) == text
    assert ids == build_demo_tokenizer()(text).input_ids  # the saved tokenizer equals the built one


def test_tokenizer_rejects_too_small_vocab():
    with pytest.raises(ValueError, match="vocab_size=100 is too small"):
        build_demo_tokenizer(vocab_size=100)


# ----------------------------------------------------------------------------------- reload + forward pass
def test_llm_reloads_through_auto_classes_and_runs(llm):
    tok, model = llm
    assert type(model).__name__ == "Gemma2ForCausalLM"
    assert type(tok).__name__ == "GemmaTokenizer"
    cfg = model.config
    assert cfg.attn_logit_softcapping and cfg.final_logit_softcapping and cfg.sliding_window == 16
    assert cfg.vocab_size == len(tok) and cfg.num_hidden_layers == N_LAYERS
    assert len(decoder_layers(model)) == N_LAYERS
    enc = tok(list(TEXTS), return_tensors="pt", padding=True)
    assert enc.input_ids.shape[1] > cfg.sliding_window  # exercises the sliding-window layers
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    assert out.logits.shape == (len(TEXTS), enc.input_ids.shape[1], len(tok))
    assert len(out.hidden_states) == N_LAYERS + 1
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_reloads_through_auto_classes_and_runs_on_image(vlms, llm, image, arch):
    processor, model = vlms[arch]
    llm_tok, _ = llm
    assert type(model).__name__ == VLM_CLASSES[arch]
    assert type(processor.image_processor).__name__.endswith("ImageProcessorPil")
    image_token_id = model.config.image_token_id
    assert image_token_id == llm_tok.image_token_id
    prompt = f"{IMAGE_TOKEN}a photo of" if arch == "paligemma" else f"{IMAGE_TOKEN}\na photo of"
    inputs = processor(text=prompt, images=image, return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    n_image = N_IMAGE_TOKENS if arch != "llava-next" else ids.count(image_token_id)  # AnyRes: varies by image
    assert ids.count(image_token_id) == n_image >= N_IMAGE_TOKENS
    assert ids.count(llm_tok.bos_token_id) == 1
    if arch == "paligemma":
        # "<image>"*N + "<bos>" + prompt + "\n", built by the processor; the whole prefix is one block
        assert ids[:N_IMAGE_TOKENS] == [image_token_id] * N_IMAGE_TOKENS
        assert ids[N_IMAGE_TOKENS] == llm_tok.bos_token_id
        assert processor.tokenizer.decode(ids[-1:]) == "\n"
        assert "token_type_ids" in inputs and (inputs["token_type_ids"] == 0).all()
    else:
        assert ids[0] == llm_tok.bos_token_id and ids[1 : 1 + n_image] == [image_token_id] * n_image
    inputs.pop("labels", None)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    assert out.logits.shape == (1, len(ids), model.config.text_config.vocab_size)
    assert out.image_hidden_states is not None
    assert len(out.hidden_states) == N_LAYERS + 1
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_tokenizer_keeps_llm_token_ids(vlms, llm, arch):
    processor, model = vlms[arch]
    llm_tok, _ = llm
    for text in TEXTS:
        llm_ids = llm_tok(text).input_ids
        vlm_ids = processor.tokenizer(text).input_ids
        # PaliGemma's tokenizer does not add BOS (its processor inserts it); LLaVA's does, like Gemma's
        assert vlm_ids == (llm_ids[1:] if arch == "paligemma" else llm_ids)
    assert model.config.text_config.vocab_size >= len(llm_tok)


def test_paligemma_token_type_ids_change_hidden_states(vlms, image):
    """Without token_type_ids the image+prompt prefix is causal instead of bidirectional."""
    processor, model = vlms["paligemma"]
    inputs = processor(text=f"{IMAGE_TOKEN}a photo of", images=image, return_tensors="pt")
    inputs.pop("labels")
    with torch.no_grad():
        with_tti = model(**inputs, output_hidden_states=True).hidden_states
        inputs.pop("token_type_ids")
        without = model(**inputs, output_hidden_states=True).hidden_states
    assert (with_tti[1] - without[1]).abs().max() > 1e-3


# ------------------------------------------------------------------------------- the ground-truth property
@pytest.mark.parametrize("arch", VLM_ARCHS)
def test_vlm_decoder_matches_llm_below_perturb_from(vlms, llm, arch):
    """Same text ids through the LLM and the VLM decoder (text only): equal below perturb_from, not above.

    PaliGemma numbers positions from 1 and Gemma2 from 0; RoPE is relative, so only rounding differs.
    """
    tok, base = llm
    _, model = vlms[arch]
    enc = tok(list(TEXTS), return_tensors="pt", padding=True)
    with torch.no_grad():
        hs_llm = base(**enc, output_hidden_states=True).hidden_states
        hs_vlm = model(
            input_ids=enc.input_ids, attention_mask=enc.attention_mask, output_hidden_states=True
        ).hidden_states
    real = enc.attention_mask.bool()
    torch.testing.assert_close(hs_vlm[0][real], hs_llm[0][real], atol=1e-5, rtol=0)  # embeddings
    for layer in range(N_LAYERS):
        a, b = hs_vlm[layer + 1][real], hs_llm[layer + 1][real]
        if layer < PERTURB_FROM:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=f"block {layer} should be unchanged")
        else:
            assert (a - b).abs().max() > 0.1, f"block {layer} should be perturbed"


@pytest.mark.parametrize("perturb_from", [0, N_LAYERS])
def test_perturbation_touches_exactly_the_blocks_from_perturb_from(demo_root, llm_dir, llm, perturb_from):
    """Compare module state dicts (the files use the hub's legacy keys, ``language_model.model.*``)."""
    from transformers import AutoModelForImageTextToText

    path = build_demo_vlm(
        demo_root / f"llava-p{perturb_from}", base_dir=llm_dir, arch="llava", perturb_from=perturb_from
    )
    vlm = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    base_state = llm[1].model.state_dict()
    vlm_state = vlm.model.language_model.state_dict()
    assert base_state.keys() == vlm_state.keys()
    for key, value in base_state.items():
        same = torch.equal(vlm_state[key], value)
        if key.startswith("layers."):
            assert same == (int(key.split(".")[1]) < perturb_from), key
        else:  # embedding and final norm are always copied unchanged
            assert same, key


def test_paligemma_embedding_extends_llm_vocab(vlms, llm):
    emb_llm = llm[1].model.embed_tokens.weight
    model = vlms["paligemma"][1]
    emb_vlm = model.model.language_model.embed_tokens.weight
    assert emb_vlm.shape[0] > emb_llm.shape[0]  # + <locNNNN>/<segNNN> tokens added by the processor
    assert emb_vlm.shape[0] == model.config.text_config.vocab_size == len(vlms["paligemma"][0].tokenizer)
    torch.testing.assert_close(emb_vlm[: emb_llm.shape[0]], emb_llm, atol=0, rtol=0)
    assert model.lm_head.weight.data_ptr() == emb_vlm.data_ptr()  # tied, as on the hub


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("bad", [-1, N_LAYERS + 1])
def test_perturb_from_out_of_range_names_the_range(demo_root, llm_dir, bad):
    with pytest.raises(ValueError, match=rf"perturb_from={bad}.*\[0, {N_LAYERS}\]"):
        build_demo_vlm(demo_root / "bad", base_dir=llm_dir, arch="llava", perturb_from=bad)
    assert not (demo_root / "bad").exists()


def test_unknown_arch_is_rejected(demo_root, llm_dir):
    with pytest.raises(ValueError, match="paligemma, llava"):
        build_demo_vlm(demo_root / "bad", base_dir=llm_dir, arch="blip", perturb_from=0)


def test_decoder_layers_paths(llm, vlms):
    _, base = llm
    assert decoder_layers(base) is base.model.layers
    for _, model in vlms.values():
        assert decoder_layers(model) is model.model.language_model.layers
        assert len(decoder_layers(model)) == N_LAYERS
    with pytest.raises(TypeError, match="cannot find the decoder blocks of a Linear"):
        decoder_layers(torch.nn.Linear(2, 2))
