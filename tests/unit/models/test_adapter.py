"""Model adapters: loading errors, position kinds, token ids."""

import pytest

from repshift.config import ModelSpec
from repshift.formats.activations_h5 import POSITION_KINDS
from repshift.models.adapter import decoder_layers, load_adapter, resolve_dtype


def test_hub_model_without_network_says_what_is_missing():
    spec = ModelSpec(
        name="gemma2-2b", family="causal-lm", source="hub", id="google/gemma-2-2b", num_layers=26
    )
    with pytest.raises(RuntimeError) as err:
        load_adapter(spec, device="cpu")
    msg = str(err.value)
    assert "gemma2-2b" in msg and "google/gemma-2-2b" in msg
    assert "token" in msg and "network" in msg and "make demo" in msg


def test_num_layers_mismatch_is_named(model_specs):
    spec = model_specs["llm"]
    bad = ModelSpec(**{**spec.__dict__, "num_layers": 26})
    with pytest.raises(ValueError, match=r"num_layers is 26 but the loaded model has 4 decoder blocks"):
        load_adapter(bad, device="cpu")


def test_position_kinds_from_token_ids(adapters):
    adapter = adapters["paligemma"]
    from PIL import Image

    batch = adapter.image_batch([Image.new("RGB", (32, 32), "red")], "caption en")
    kinds = batch.kinds_BT[0]
    ids = batch.ids_BT[0]
    assert (kinds[ids == adapter.image_token_id] == POSITION_KINDS["image"]).all()
    assert (kinds == POSITION_KINDS["bos"]).sum() == 1
    assert kinds[-1] == POSITION_KINDS["text"]  # PaliGemma's "\n" after the prompt is text
    text_batch = adapter.text_batch([[2, 10, 11], [2, 12]])
    assert text_batch.kinds_BT[1, 0] == POSITION_KINDS["pad"]
    assert text_batch.inputs["attention_mask"][1, 0] == 0


def test_float16_is_refused():
    import torch

    with pytest.raises(ValueError, match="float16 overflows"):
        resolve_dtype("float16", torch.device("cpu"))


def test_decoder_layers_unknown_model():
    import torch

    with pytest.raises(TypeError, match="Linear"):
        decoder_layers(torch.nn.Linear(2, 2))
