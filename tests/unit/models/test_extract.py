"""Extraction: layer L = output of block L for every family, pooling, hooks, HDF5 content, atomicity."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from repshift.formats import activations_h5
from repshift.formats.activations_h5 import POSITION_KINDS, read_activations
from repshift.models.extract import capture_layers, extract_dataset, pool, run_capture

TEXTS = ["a photo of a cat", "a red car on the road with a dog", "person", "a striped cat sitting on a chair"]


def _manifest(tmp_path, with_images=True):
    rows = []
    for i, t in enumerate(TEXTS):
        rows.append(
            dict(
                example_id=f"{i}-c",
                image_id=i,
                group=i,
                modality="text",
                file=f"{i}.png",
                text=t,
                label=i % 2,
                label_name="ab"[i % 2],
                transform="",
                fold=i % 2,
            )
        )
        if with_images:
            rows.append(
                dict(
                    example_id=f"{i}",
                    image_id=i,
                    group=i,
                    modality="image",
                    file=f"{i}.png",
                    text="",
                    label=i % 2,
                    label_name="ab"[i % 2],
                    transform="",
                    fold=i % 2,
                )
            )
            rng = np.random.default_rng(i)
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    return pd.DataFrame(rows)


def _hidden_states_reference(adapter, batch):
    """hidden_states[L+1] from HF, and the raw last block via a plain hook (HF applies the final norm)."""
    last = {}
    h = adapter.layers[-1].register_forward_hook(
        lambda m, a, o: last.__setitem__("out", (o[0] if isinstance(o, tuple) else o).detach())
    )
    try:
        with torch.inference_mode():
            out = adapter.model(**batch.inputs, output_hidden_states=True, use_cache=False)
    finally:
        h.remove()
    hs = out.hidden_states if out.hidden_states is not None else out.language_model_outputs.hidden_states
    return hs, last["out"]


@pytest.mark.parametrize("family", ["llm", "paligemma", "llava", "llava-next"])
def test_layer_L_is_output_of_block_L_on_text(adapters, family):
    adapter = adapters[family]
    batch = adapter.text_batch([adapter.text_ids(t, 64)[0] for t in TEXTS])
    layers = list(range(adapter.num_layers))
    captured = run_capture(adapter, batch, layers)
    hs, last_raw = _hidden_states_reference(adapter, batch)
    assert len(hs) == adapter.num_layers + 1
    for layer in layers[:-1]:
        torch.testing.assert_close(captured[layer], hs[layer + 1])
    # the last block is read before the final norm: equal to a hook, not to hidden_states[-1]
    torch.testing.assert_close(captured[layers[-1]], last_raw)
    assert not torch.allclose(captured[layers[-1]], hs[-1])


@pytest.mark.parametrize("family", ["paligemma", "llava", "llava-next"])
def test_layer_L_is_output_of_block_L_on_images(adapters, family, tmp_path):
    adapter = adapters[family]
    sizes = [(40, 40), (80, 40)] if family == "llava-next" else [(40, 40), (40, 40)]
    imgs = [Image.new("RGB", size, c) for size, c in zip(sizes, ("red", "blue"), strict=True)]
    batch = adapter.image_batch(imgs, adapter.spec.image_prompt)
    if family == "paligemma":
        assert "token_type_ids" in batch.inputs
    n_img = (batch.kinds_BT == POSITION_KINDS["image"]).sum(1)
    if family == "llava-next":  # AnyRes: the image-token count depends on the image's size and aspect
        assert n_img[0] != n_img[1] and (n_img > 16).all()
    else:
        assert (n_img == 16).all()
    captured = run_capture(adapter, batch, [0, 1, 3])
    hs, last_raw = _hidden_states_reference(adapter, batch)
    torch.testing.assert_close(captured[0], hs[1])
    torch.testing.assert_close(captured[1], hs[2])
    torch.testing.assert_close(captured[3], last_raw)


def test_forward_stops_after_deepest_requested_block(adapters):
    adapter = adapters["llm"]
    ran = []
    hooks = [
        blk.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, blk in enumerate(adapter.layers)
    ]
    head = adapter.model.lm_head.register_forward_hook(lambda *a: ran.append("head"))
    try:
        batch = adapter.text_batch([adapter.text_ids("a cat", 64)[0]])
        run_capture(adapter, batch, [1])
    finally:
        for h in [*hooks, head]:
            h.remove()
    assert ran == [0, 1]


def test_hooks_are_removed_even_on_error(adapters):
    adapter = adapters["llm"]
    before = [len(b._forward_hooks) for b in adapter.layers]
    with pytest.raises(RuntimeError), capture_layers(adapter.layers, [0, 2]):
        assert [len(b._forward_hooks) for b in adapter.layers] != before
        raise RuntimeError("boom")
    assert [len(b._forward_hooks) for b in adapter.layers] == before


def test_text_ids_identical_across_families_with_bos(adapters):
    ids = {k: a.text_ids("a striped cat on a chair", 64)[0] for k, a in adapters.items()}
    assert ids["llm"] == ids["paligemma"] == ids["llava"] == ids["llava-next"]
    assert ids["llm"][0] == adapters["llm"].tokenizer.bos_token_id
    assert adapters["llm"].tokenizer("a striped cat on a chair")["input_ids"] == ids["llm"]


def test_pooling_ignores_bos_and_pads():
    h = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    k = POSITION_KINDS
    kinds = np.array(
        [[k["pad"], k["bos"], k["text"], k["text"]], [k["bos"], k["image"], k["image"], k["text"]]],
        dtype=np.int8,
    )
    out = pool(h, kinds, ["text", "image"])
    np.testing.assert_allclose(out["mean"][0], h[0, 2:].mean(0).numpy())
    np.testing.assert_allclose(out["mean"][1], h[1, 1:3].mean(0).numpy())
    np.testing.assert_allclose(out["mean_text"][1], h[1, 3].numpy())
    np.testing.assert_allclose(out["last"][0], h[0, 3].numpy())
    np.testing.assert_allclose(out["mean_image"][0], 0.0)  # no image positions: zeros, count 0, no NaN
    assert out["n_image"].tolist() == [0, 2] and out["n_text"].tolist() == [2, 1]


def test_padding_does_not_change_pooled_vectors(adapters, tmp_path):
    """The same text alone or batched with longer texts (left pads) pools to the same vector."""
    adapter = adapters["llm"]
    df = _manifest(tmp_path, with_images=False)
    a = tmp_path / "a.h5"
    b = tmp_path / "b.h5"
    extract_dataset(adapter, df, {1: a}, batch_size=4, progress=False)
    extract_dataset(adapter, df, {1: b}, batch_size=1, progress=False)
    np.testing.assert_allclose(
        read_activations(a).pooled("mean"), read_activations(b).pooled("mean"), rtol=1e-4, atol=1e-5
    )


def test_extract_dataset_writes_aligned_hdf5(adapters, tmp_path):
    adapter = adapters["paligemma"]
    df = _manifest(tmp_path)
    paths = {0: tmp_path / "l0.h5", 3: tmp_path / "l3.h5"}
    summary = extract_dataset(
        adapter,
        df,
        paths,
        image_dir=tmp_path,
        tokens=True,
        batch_size=3,
        store_dtype="float32",
        progress=False,
    )
    assert summary["n_examples"] == len(df)
    acts = read_activations(paths[3])
    assert list(acts.example_id) == list(df["example_id"])
    assert list(acts.label) == list(df["label"])
    assert acts.attrs["layer"] == 3 and acts.attrs["d_model"] == adapter.d_model
    assert "output of decoder block L" in acts.attrs["layer_convention"]
    tok = acts.tokens()
    assert not (tok.kinds_T == POSITION_KINDS["pad"]).any()
    # token-level rows pool back to the stored pooled vectors
    for i, modality in enumerate(acts.modality):
        rows = slice(tok.offsets_N1[i], tok.offsets_N1[i + 1])
        want = POSITION_KINDS["image" if modality == "image" else "text"]
        sel = tok.kinds_T[rows] == want
        np.testing.assert_allclose(
            tok.acts_TD[rows][sel].mean(0), acts.pooled("mean")[i], rtol=1e-4, atol=1e-5
        )
    # text rows of the VLM equal a fresh single forward on identical ids
    batch = adapter.text_batch([adapter.text_ids(TEXTS[0], 64)[0]])
    ref = run_capture(adapter, batch, [3])[3][0].numpy()
    np.testing.assert_allclose(tok.acts_TD[tok.offsets_N1[0] : tok.offsets_N1[1]], ref, rtol=1e-4, atol=1e-4)


def test_extraction_is_deterministic(adapters, tmp_path):
    df = _manifest(tmp_path, with_images=False)
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for p in (a, b):
        extract_dataset(adapters["llm"], df, {2: p}, tokens=True, progress=False)
    np.testing.assert_array_equal(read_activations(a).pooled("mean"), read_activations(b).pooled("mean"))


def test_image_loading_threads_change_nothing(adapters, tmp_path):
    """Images decoded (and augmented) by worker threads one batch ahead give the same file as one thread."""
    df = _manifest(tmp_path)
    df.loc[df["modality"] == "image", "transform"] = ["brightness:0.5", "", "rotation:90", "", "redness:1.5"][
        : int((df["modality"] == "image").sum())
    ]
    out = {}
    for workers in (1, 3):
        out[workers] = tmp_path / f"w{workers}.h5"
        extract_dataset(
            adapters["paligemma"],
            df,
            {2: out[workers]},
            image_dir=tmp_path,
            tokens=True,
            batch_size=2,
            workers=workers,
            progress=False,
            store_dtype="float32",
        )
    a, b = read_activations(out[1]), read_activations(out[3])
    np.testing.assert_array_equal(a.pooled("mean"), b.pooled("mean"))
    np.testing.assert_array_equal(a.tokens().acts_TD[:], b.tokens().acts_TD[:])


@pytest.mark.parametrize("workers", [1, 2])
def test_failed_extraction_leaves_nothing(adapters, tmp_path, workers):
    df = _manifest(tmp_path)
    (tmp_path / "2.png").write_bytes(b"\x89PNG truncated")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(Exception, match="2.png"):
        extract_dataset(
            adapters["paligemma"],
            df,
            {1: out / "layer-1.h5"},
            image_dir=tmp_path,
            progress=False,
            batch_size=2,
            workers=workers,
        )
    assert list(out.iterdir()) == []


def test_bad_requests_fail_clearly(adapters, tmp_path):
    df = _manifest(tmp_path)
    with pytest.raises(ValueError, match=r"has 4 blocks \(0-3\)"):
        extract_dataset(adapters["llm"], df, {7: tmp_path / "x.h5"}, progress=False)
    with pytest.raises(ValueError, match="text-only model"):
        adapters["llm"].image_batch([Image.new("RGB", (8, 8))], "")
    with pytest.raises(ValueError, match="empty"):
        extract_dataset(adapters["paligemma"], df.iloc[:0], {1: tmp_path / "e.h5"}, progress=False)
    with pytest.raises(ValueError, match="no token-level storage"):
        extract_dataset(adapters["llm"], df, {1: tmp_path / "n.h5"}, progress=False)
        read_activations(tmp_path / "n.h5").tokens()
    assert activations_h5.POOLINGS[0] == "mean"


@pytest.mark.parametrize("arch", ["paligemma", "llava"])
def test_vision_tower_layer_L_is_output_of_tower_block_L(vision_adapters, arch, tmp_path):
    adapter = vision_adapters[arch]
    assert adapter.d_model == adapter.model.config.vision_config.hidden_size
    imgs = [Image.new("RGB", (40, 40), c) for c in ("red", "blue")]
    batch = adapter.image_batch(imgs, adapter.spec.image_prompt)
    captured = run_capture(adapter, batch, [0, 1])
    tower = adapter.model.model.vision_tower
    with torch.inference_mode():
        ref = tower(pixel_values=batch.inputs["pixel_values"], output_hidden_states=True).hidden_states
    torch.testing.assert_close(captured[0], ref[1])
    torch.testing.assert_close(captured[1], ref[2])  # last tower block, before any post-layernorm
    kinds, _ = adapter.captured_kinds(batch, captured[0])
    n_special = int((kinds[0] == POSITION_KINDS["special"]).sum())
    assert n_special == (1 if arch == "llava" else 0)  # CLIP's class token is never pooled
    # extraction: image rows only, tower width, pooled over patches
    df = _manifest(tmp_path)
    out = {0: tmp_path / "v0.h5", 1: tmp_path / "v1.h5"}
    extract_dataset(adapter, df, out, image_dir=tmp_path, tokens=True, progress=False, store_dtype="float32")
    acts = read_activations(out[1])
    assert set(acts.modality) == {"image"} and len(acts.example_id) == (df["modality"] == "image").sum()
    assert acts.attrs["stream"] == "vision" and acts.d_model == adapter.d_model
    tok = acts.tokens()
    rows = slice(tok.offsets_N1[0], tok.offsets_N1[1])
    sel = tok.kinds_T[rows] == POSITION_KINDS["image"]
    np.testing.assert_allclose(tok.acts_TD[rows][sel].mean(0), acts.pooled("mean")[0], rtol=1e-4, atol=1e-5)


def test_vision_stream_refuses_llava_next(demo_model_dirs):
    from repshift.config import ModelSpec
    from repshift.models.adapter import load_adapter

    spec = ModelSpec(
        name="nx-vision",
        family="llava-next",
        source="local",
        path=str(demo_model_dirs["llava-next"]),
        num_layers=2,
        stream="vision",
    )
    with pytest.raises(ValueError, match="vision stream is supported for paligemma and llava"):
        load_adapter(spec, device="cpu")


def _rows(modalities):
    return pd.DataFrame(
        {"example_id": [str(i) for i in range(len(modalities))], "modality": modalities, "text": "t"}
    )


def test_shard_rows_cuts_contiguous_slices_that_cover_every_row_once():
    from repshift.models.extract import shard_rows

    rows = _rows(["text"] * 5)
    # linspace(0, 5, 3) = [0, 2.5, 5] rounds (half to even) to [0, 2, 5]
    assert shard_rows(rows, 0, 2)["example_id"].tolist() == ["0", "1"]
    assert shard_rows(rows, 1, 2)["example_id"].tolist() == ["2", "3", "4"]
    with pytest.raises(ValueError, match="shard 2 is not in 0..1"):
        shard_rows(rows, 2, 2)


def test_rows_to_extract_refuses_empty_and_image_only_datasets_for_a_text_model():
    from repshift.config import ModelSpec
    from repshift.models.extract import rows_to_extract

    lm = ModelSpec(name="lm", family="gemma2", source="demo", num_layers=2)
    with pytest.raises(ValueError, match="dataset d.parquet is empty"):
        rows_to_extract(_rows([]), lm, "d.parquet")
    with pytest.raises(ValueError, match="lm is a text-only model but dataset d.parquet has only image rows"):
        rows_to_extract(_rows(["image", "image"]), lm, "d.parquet")
    kept = rows_to_extract(_rows(["image", "text", "text", "text"]), lm, "d.parquet", shard=(1, 2))
    # text rows 1, 2, 3; linspace(0, 3, 3) = [0, 1.5, 3] rounds to [0, 2, 3]: shard 1 is row 3 alone
    assert kept["example_id"].tolist() == ["3"]
