"""The family table, and the two families built on it: SmolLM2 -> SmolVLM (Idefics3) and Qwen2 -> Qwen2-VL."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from repshift.config import VLM_FAMILIES, ModelSpec, check_config
from repshift.formats.activations_h5 import POSITION_KINDS, read_activations
from repshift.models.adapter import load_adapter
from repshift.models.extract import extract_dataset
from repshift.models.families import FAMILIES, build_demo_llm

ROOT = Path(__file__).resolve().parents[3]
N_LAYERS = 4
PERTURB_FROM = 2
TEXT = "A photo of a cat sitting on a chair."
PAIRS = {"smolvlm": "smollm2", "qwen2-vl": "qwen2"}


def test_schema_family_enum_is_the_table():
    schema = yaml.safe_load((ROOT / "rules/config.schema.yaml").read_text())
    family = schema["properties"]["models"]["additionalProperties"]["properties"]["family"]
    assert family["enum"] == list(FAMILIES)
    assert VLM_FAMILIES == {"paligemma", "llava", "llava-next", "qwen2-vl", "smolvlm"}


@pytest.mark.parametrize("name", ["qwen2-vl", "smolvlm"])
def test_config_examples_validate_and_check(name):
    from snakemake.utils import validate

    cfg = yaml.safe_load((ROOT / f"config/examples/{name}.yaml").read_text())
    validate(cfg, str(ROOT / "rules/config.schema.yaml"))
    check_config(cfg)
    fams = {m["family"] for m in cfg["models"].values()}
    assert fams == {"causal-lm", name}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from repshift.demo.models import build_demo_vlm

    root = tmp_path_factory.mktemp("fam")
    out = {}
    for vlm, llm in PAIRS.items():
        out[llm] = build_demo_llm(llm, root / llm, seed=0, num_hidden_layers=N_LAYERS)
        out[vlm] = build_demo_vlm(root / vlm, base_dir=out[llm], arch=vlm, perturb_from=PERTURB_FROM, seed=0)
    return out


def _spec(built, key):
    family = key if key in FAMILIES else "causal-lm"
    return ModelSpec(name=key, family=family, source="local", path=str(built[key]), num_layers=N_LAYERS)


def _adapter(built, key):
    return load_adapter(_spec(built, key), device="cpu")


def _image(seed=0, shape=(40, 50, 3)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8))


@pytest.mark.parametrize("llm", ["qwen2", "smollm2"])
def test_demo_llm_has_no_bos_and_reloads(built, llm):
    a = _adapter(built, llm)
    assert a.text_tokenizer.bos is False and a.bos_id is None
    ids, _ = a.text_ids(TEXT, 64)
    assert ids == a.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert a.tokenizer.decode(ids) == TEXT


@pytest.mark.parametrize("vlm", ["smolvlm", "qwen2-vl"])
def test_text_ids_identical_and_blocks_before_k_identical(built, vlm):
    llm, v = _adapter(built, PAIRS[vlm]), _adapter(built, vlm)
    assert type(v.model).__name__ in FAMILIES[vlm].model_classes
    ids_l, ids_v = llm.text_ids(TEXT, 64)[0], v.text_ids(TEXT, 64)[0]
    assert ids_l == ids_v and ids_v[0] != v.tokenizer.bos_token_id
    batch = llm.text_batch([ids_l])
    with torch.inference_mode():
        hl = llm.model(**batch.inputs, output_hidden_states=True).hidden_states
        hv = v.model(**batch.inputs, output_hidden_states=True).hidden_states
    for layer in range(N_LAYERS):
        diff = float((hl[layer + 1] - hv[layer + 1]).abs().max())
        assert (diff < 1e-5) if layer < PERTURB_FROM else (diff > 1e-3), (layer, diff)


@pytest.mark.parametrize("vlm", ["smolvlm", "qwen2-vl"])
def test_token_check_loads_the_vlm_tokenizer_through_its_family(built, vlm):
    from repshift.models.tokens import check_same_token_ids, load_tokenizer

    toks = {k: load_tokenizer(_spec(built, k), str(built[k])) for k in (PAIRS[vlm], vlm)}
    assert [t.bos for t in toks.values()] == [False, False]
    assert check_same_token_ids([TEXT, "a dog"], toks, max_tokens=64) == 2


@pytest.mark.parametrize("vlm", ["smolvlm", "qwen2-vl"])
def test_left_padded_text_batch_matches_llm_before_k(built, vlm):
    """Batched text comparisons are valid, not only single rows: on a left-padded batch the VLM's real positions
    equal the LLM's and the row run alone (Qwen2-VL builds its text M-RoPE positions from the attention mask; RoPE
    being relative, this catches pads leaking into attention or a position scheme other than a shift)."""
    llm, v = _adapter(built, PAIRS[vlm]), _adapter(built, vlm)
    short = llm.text_ids("a dog", 64)[0]
    batch = llm.text_batch([llm.text_ids(TEXT, 64)[0], short])
    real = batch.inputs["attention_mask"].bool()
    assert not real[1, 0]  # the short row is left-padded
    with torch.inference_mode():
        hl = llm.model(**batch.inputs, output_hidden_states=True).hidden_states
        hv = v.model(**batch.inputs, output_hidden_states=True).hidden_states
        alone = v.model(input_ids=torch.tensor([short]), output_hidden_states=True).hidden_states
    for layer in range(PERTURB_FROM):
        torch.testing.assert_close(hv[layer + 1][real], hl[layer + 1][real], atol=1e-5, rtol=0)
        torch.testing.assert_close(hv[layer + 1][1, -len(short) :], alone[layer + 1][0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("vlm", ["smolvlm", "qwen2-vl"])
def test_layer_convention_on_image_input(built, vlm):
    from repshift.models.extract import run_capture

    a = _adapter(built, vlm)
    batch = a.image_batch([_image(0), _image(1)], "Describe.")
    for key in FAMILIES[vlm].image_inputs:
        assert key in batch.inputs
    captured = run_capture(a, batch, list(range(N_LAYERS)))
    inputs = {k: v for k, v in batch.inputs.items()}
    with torch.inference_mode():
        hs = a.model(**inputs, output_hidden_states=True).hidden_states
    assert len(hs) == N_LAYERS + 1
    for layer in range(N_LAYERS - 1):
        torch.testing.assert_close(captured[layer].float(), hs[layer + 1].float(), atol=1e-5, rtol=1e-5)
    # the last block's raw output is not hidden_states[-1] (final norm applied there)
    assert float((captured[N_LAYERS - 1].float() - hs[-1].float()).abs().max()) > 1e-3


@pytest.mark.parametrize("vlm", ["smolvlm", "qwen2-vl"])
def test_image_positions_are_the_image_token_ids(built, vlm):
    a = _adapter(built, vlm)
    batch = a.image_batch([_image(0, (40, 50, 3)), _image(1, (64, 30, 3))], "Describe.")
    ids = batch.inputs["input_ids"].numpy()
    image = batch.kinds_BT == POSITION_KINDS["image"]
    np.testing.assert_array_equal(image, ids == a.image_token_id)
    assert not (batch.kinds_BT == POSITION_KINDS["bos"]).any()
    if vlm == "smolvlm":
        # longest edge resized to 64: 40x50 -> 2x2 tiles of 32 px, 64x30 -> 2x1; + 1 global view; 4 tokens each
        rows_cols = [(2, 2), (2, 1)]
        expected = [4 * (r * c + 1) for r, c in rows_cols]
    else:
        # pixel budget 32x32, factor 16 (patch 8 x merge 2), aspect kept (smart_resize): 40x50 -> round to
        # 32x48 = 1536 > 1024, so scale by sqrt(2000/1024): floor(1.79)=1, floor(2.24)=2 units -> 16x32 pixels;
        # 64x30 -> 64x32 = 2048 > 1024, scale by sqrt(1920/1024): floor(2.92)=2, floor(1.37)=1 -> 32x16
        grid = batch.inputs["image_grid_thw"].numpy()
        assert grid.tolist() == [[1, 2, 4], [1, 4, 2]]
        expected = [1 * 2 * 4 // 4, 1 * 4 * 2 // 4]
    assert image.sum(1).tolist() == expected


@pytest.mark.parametrize("vlm", ["smolvlm", "qwen2-vl"])
def test_extract_dataset_writes_every_layer(built, vlm, tmp_path):
    a = _adapter(built, vlm)
    rows = []
    for i in range(3):
        _image(i).save(tmp_path / f"{i}.png")
        for modality, text in (("text", f"a cat number {i}"), ("image", "")):
            rows.append(
                dict(
                    example_id=f"{i}-{modality}",
                    image_id=i,
                    group=i,
                    modality=modality,
                    file=f"{i}.png",
                    text=text,
                    label=i % 2,
                    label_name="ab"[i % 2],
                    transform="",
                    fold=i % 2,
                )
            )
    out = {layer: tmp_path / f"layer-{layer}.h5" for layer in range(N_LAYERS)}
    extract_dataset(a, pd.DataFrame(rows), out, image_dir=tmp_path, batch_size=2, progress=False)
    for layer, path in out.items():
        acts = read_activations(path)
        assert acts.attrs["num_layers"] == N_LAYERS and acts.attrs["layer"] == layer
        assert acts.attrs["family"] == vlm
        assert len(acts.modality) == 6
