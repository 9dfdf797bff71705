"""Evaluation of a VLM-trained SAE by modality, on hand-set sae-lens SAEs and the tiny demo VLMs: FVU / L0 / dead
and dense latents per token kind computed by hand, spliced CE by span (identity -> recovered 1, a decoder of
zeros -> 0), which positions a splice can reach, and token kinds that never leak into one another."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from repshift.formats.activations_h5 import POSITION_KINDS as K
from repshift.models.extract import run_capture
from repshift.sae import evaluate_vlm as ev
from repshift.sae.spliced import SplicedCE, replace_block_output, zero_splice

LAYER = 1
CAPTIONS = ["a cat on a mat", "two dogs run in the park", "a red car", "a person"]


def _jumprelu(w_enc_DF, w_dec_FD, b_dec_D=None):
    """A real sae-lens JumpReLU SAE with threshold 0 (a latent fires when its pre-activation is > 0)."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    d, f = w_enc_DF.shape
    cfg = JumpReLUSAEConfig(
        d_in=d,
        d_sae=f,
        dtype="float32",
        device="cpu",
        apply_b_dec_to_input=False,
        normalize_activations="none",
    )
    sae = JumpReLUSAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(w_enc_DF)
        sae.b_enc.zero_()
        sae.threshold.zero_()
        sae.W_dec.copy_(w_dec_FD)
        sae.b_dec.copy_(torch.zeros(d) if b_dec_D is None else b_dec_D)
    return sae.eval()


def identity_sae(d):
    """Latents relu(x_i) (0..d-1) and relu(-x_i) (d..2d-1), decoded back to x exactly."""
    eye = torch.eye(d)
    return _jumprelu(torch.cat([eye, -eye], 1), torch.cat([eye, -eye], 0))


def constant_sae(d, b_dec_D=None):
    """Encodes like the identity SAE, decodes every token to ``b_dec_D`` (zeros by default)."""
    eye = torch.eye(d)
    return _jumprelu(torch.cat([eye, -eye], 1), torch.zeros(2 * d, d), b_dec_D)


def _values(table: pd.DataFrame, sae: str, kind: str) -> dict[str, float]:
    t = table[(table["sae"] == sae) & (table["position_kind"] == kind)]
    return dict(zip(t["metric"], t["value"], strict=True))


# -- metrics by token kind ------------------------------------------------------------------------------------
def test_identity_gives_fvu_0_and_a_mean_decoder_fvu_1_on_every_kind():
    g = torch.Generator().manual_seed(0)
    m_D = torch.tensor([3.0, -1.0, 0.5, 2.0, 0.0, 1.0])
    tokens = {}
    for kind, n in (("image", 40), ("prompt", 7), ("caption", 12)):
        x = torch.randn(n, 6, generator=g)
        tokens[kind] = x - x.mean(0) + m_D  # every kind has mean m exactly
    saes = {"ident": identity_sae(6), "mean": constant_sae(6, m_D), "zero": constant_sae(6)}
    table = ev.modality_metric_rows(saes, tokens)
    assert set(table["position_kind"]) == {"image", "prompt", "caption"}
    for kind, x in tokens.items():
        ident, mean, zero = (_values(table, s, kind) for s in ("ident", "mean", "zero"))
        assert ident["fvu"] == pytest.approx(0.0, abs=1e-6)
        assert ident["n_tokens"] == x.shape[0]
        assert ident["l0"] == pytest.approx(
            float((x != 0).sum(1).float().mean())
        )  # one latent per non-zero x_i
        assert mean["fvu"] == pytest.approx(1.0, abs=1e-5)  # x_hat = E[x]: nothing explained
        # zeros: FVU = E|x|^2 / E|x - m|^2 = 1 + |m|^2 / Var
        var = float((x - m_D).pow(2).sum(1).mean())
        assert zero["fvu"] == pytest.approx(1 + float(m_D.pow(2).sum()) / var, rel=1e-4)


def test_dead_and_dense_latents_differ_by_kind_as_counted_by_hand():
    # 6 latents: relu(x0), relu(x1), relu(x2), relu(-x0), relu(-x1), relu(-x2)
    tokens = {
        "image": torch.tensor([[1.0, 0, 0], [2.0, 0, 0]]),  # latent 0 only
        "caption": torch.tensor([[0, 1.0, -1.0], [0, 3.0, -2.0], [0, 0, -1.0]]),  # latents 1 (2/3), 5 (3/3)
        "prompt": torch.tensor([[0, 0, 1.0]]),  # latent 2 only
        "empty": torch.zeros(0, 3),  # no tokens: no rows
    }
    table = ev.modality_metric_rows({"s": identity_sae(3)}, tokens)
    assert set(table["position_kind"]) == {"image", "caption", "prompt"}
    image, caption, prompt = (_values(table, "s", k) for k in ("image", "caption", "prompt"))
    assert image["dead_frac"] == pytest.approx(5 / 6) and image["dense_frac"] == pytest.approx(1 / 6)
    assert caption["dead_frac"] == pytest.approx(4 / 6) and caption["dense_frac"] == pytest.approx(2 / 6)
    assert prompt["dead_frac"] == pytest.approx(5 / 6)
    assert image["l0"] == 1 and caption["l0"] == pytest.approx(5 / 3) and prompt["l0"] == 1
    assert all(v["fvu"] == pytest.approx(0.0, abs=1e-6) for v in (image, caption, prompt))


def test_metrics_of_a_kind_ignore_the_other_kinds():
    g = torch.Generator().manual_seed(1)
    tokens = {k: torch.randn(n, 4, generator=g) for k, n in (("image", 30), ("prompt", 5), ("caption", 9))}
    saes = {"s": constant_sae(4, torch.ones(4)), "t": identity_sae(4)}
    before = ev.modality_metric_rows(saes, tokens)
    altered = {**tokens, "image": 10 * tokens["image"] + 3}
    after = ev.modality_metric_rows(saes, altered)
    text = before["position_kind"] != "image"
    pd.testing.assert_frame_equal(before[text], after[text])
    assert not np.allclose(before.loc[~text, "value"], after.loc[~text, "value"])


# -- a real VLM's tokens by kind --------------------------------------------------------------------------------
def _images(folder, seed):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(len(CAPTIONS)):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _manifest():
    n = len(CAPTIONS)
    image = pd.DataFrame(
        {
            "modality": "image",
            "file": [f"{i}.png" for i in range(n)],
            "transform": "",
            "captions": [f"{c} ||| another caption" for c in CAPTIONS],
            "text": "",
        }
    )
    text = pd.DataFrame({"modality": "text", "file": "", "transform": "", "captions": "", "text": CAPTIONS})
    rows = pd.concat([image, text], ignore_index=True)
    return rows.assign(pair_id=[*range(n), *range(n)], fold=[0, 1, 0, 1] * 2, label=["a", "b"] * n)


@pytest.mark.parametrize("arch", ["paligemma", "llava"])
def test_encode_rows_sorts_tokens_by_kind_and_reads_block_l(adapters, tmp_path, arch):
    adapter = adapters[arch]
    rows = _manifest()
    per_row = ev.encode_rows(
        adapter, rows, LAYER, image_dir=_images(tmp_path, 0), batch_size=3, max_tokens=32
    )
    imgs = [Image.open(tmp_path / f"{i}.png").convert("RGB") for i in range(len(CAPTIONS))]
    batch = adapter.image_batch(imgs, adapter.spec.image_prompt)
    hidden = run_capture(adapter, batch, [LAYER])[LAYER].float()
    for i in range(len(CAPTIONS)):
        assert set(per_row[i]) == {"image", "prompt"}  # image rows: no caption tokens
        image_pos = batch.kinds_BT[i] == K["image"]
        prompt_pos = batch.kinds_BT[i] == K["text"]
        assert per_row[i]["image"].shape[0] == image_pos.sum() > 0
        torch.testing.assert_close(per_row[i]["image"], hidden[i][torch.from_numpy(image_pos)])
        torch.testing.assert_close(per_row[i]["prompt"], hidden[i][torch.from_numpy(prompt_pos)])
    for j, text in enumerate(CAPTIONS):
        tb = adapter.text_batch([adapter.text_ids(text, 32)[0]])
        h = run_capture(adapter, tb, [LAYER])[LAYER].float()[0]
        row = per_row[len(CAPTIONS) + j]
        assert set(row) == {"caption"}  # BOS never among them
        torch.testing.assert_close(row["caption"], h[torch.from_numpy(tb.kinds_BT[0] == K["text"])])


def test_caption_metrics_do_not_move_when_the_images_change(adapters, tmp_path):
    adapter = adapters["llava"]
    rows = _manifest()
    sae = {"s": identity_sae(adapter.d_model)}
    out = {}
    for seed in (0, 1):
        per_row = ev.encode_rows(
            adapter, rows, LAYER, image_dir=_images(tmp_path / str(seed), seed), batch_size=4, max_tokens=32
        )
        tokens = ev._kind_tokens(per_row, adapter.d_model)
        out[seed] = (tokens, ev.modality_metric_rows({"s": constant_sae(adapter.d_model)} | sae, tokens))
    (t0, m0), (t1, m1) = out[0], out[1]
    torch.testing.assert_close(t0["caption"], t1["caption"], rtol=0, atol=0)
    assert not torch.allclose(t0["image"], t1["image"])
    cap = m0["position_kind"] == "caption"
    pd.testing.assert_frame_equal(
        m0[cap].reset_index(drop=True), m1[m1["position_kind"] == "caption"].reset_index(drop=True)
    )
    assert not np.allclose(
        m0.loc[m0["position_kind"] == "image", "value"], m1.loc[m1["position_kind"] == "image", "value"]
    )


# -- spliced CE by span --------------------------------------------------------------------------------------------
def _img_rows(rows):
    return rows[rows["modality"] == "image"]


@pytest.mark.parametrize("arch", ["paligemma", "llava"])
def test_identity_recovers_all_and_a_zero_decoder_nothing_on_every_span(adapters, tmp_path, arch):
    adapter = adapters[arch]
    d = adapter.d_model
    rows = _manifest()
    saes = {"ident": identity_sae(d), "zero": constant_sae(d)}
    hooks = [len(b._forward_hooks) for b in adapter.layers]
    res = ev.spliced_ce_by_span(adapter, saes, rows, LAYER, image_dir=_images(tmp_path, 0), batch_size=3)
    assert [len(b._forward_hooks) for b in adapter.layers] == hooks
    assert set(res) == {(s, span) for s in saes for span in ev.SPLICE_SPANS}
    for span in ev.SPLICE_SPANS:
        ident, zero = res[("ident", span)], res[("zero", span)]
        assert ident.n_prompts == len(CAPTIONS)
        assert ident.ce_sae == pytest.approx(ident.ce_clean, abs=1e-5)
        assert zero.ce_sae == pytest.approx(zero.ce_zero, abs=1e-5)
        assert ident.ce_zero == zero.ce_zero  # one zero-ablation per span, shared by the SAEs
        assert abs(ident.ce_zero - ident.ce_clean) > 1e-4  # defined: the splice reaches the targets
        assert ident.recovered == pytest.approx(1.0, abs=1e-3) and zero.recovered == pytest.approx(
            0.0, abs=1e-3
        )
    # the spans differ: zeroing image positions is not zeroing text positions
    assert res[("ident", "image")].ce_zero != res[("ident", "text")].ce_zero
    # targets: the caption tokens (PaliGemma: suffix) or every text position but the first (LLaVA)
    imgs = [Image.open(tmp_path / f"{i}.png").convert("RGB") for i in range(len(CAPTIONS))]
    if arch == "paligemma":
        tok = adapter.processor.tokenizer
        want = sum(len(tok(c, add_special_tokens=False)["input_ids"]) for c in CAPTIONS)
    else:
        batch, _ = ev.image_caption_batch(adapter, imgs, adapter.spec.image_prompt, CAPTIONS)
        want = int((batch.kinds_BT[:, 1:] == K["text"]).sum())
    assert res[("ident", "all")].n_targets == want


def test_paligemma_targets_are_the_causal_caption_tokens_only(adapters):
    """The prefix (image + prompt) attends both ways: a target there would be visible from t-1. Changing the last
    caption token must not move any earlier position's logits."""
    adapter = adapters["paligemma"]
    img = [Image.new("RGB", (32, 32), (200, 40, 90))] * 2
    batch, target = ev.image_caption_batch(adapter, img, adapter.spec.image_prompt, CAPTIONS[:2])
    tt = batch.inputs["token_type_ids"].numpy()
    assert (tt[target.numpy()] == 1).all() and (batch.kinds_BT[target.numpy()] == K["text"]).all()
    assert not target[batch.kinds_BT == K["image"]].any()
    ids2 = batch.inputs["input_ids"].clone()
    last = int(np.flatnonzero(target[0].numpy())[-1])
    ids2[0, last] = (ids2[0, last] + 1) % 200 + 10
    with torch.inference_mode():
        a = ev._logits(adapter, batch)
        b = ev._logits(
            adapter, type(batch)({**batch.inputs, "input_ids": ids2}, batch.kinds_BT, ids2.numpy())
        )
    torch.testing.assert_close(a[0, :last], b[0, :last])
    assert not torch.allclose(a[0, last], b[0, last])


def test_a_splice_never_reaches_earlier_positions(adapters):
    """LLaVA is causal: zeroing the text positions (all after the image) leaves every logit up to the last image
    token as it was; zeroing the image positions leaves those before the image span (BOS, pads) as they were."""
    adapter = adapters["llava"]
    img = [Image.new("RGB", (32, 32), (10, 120, 30))] * 2
    batch, _ = ev.image_caption_batch(adapter, img, adapter.spec.image_prompt, CAPTIONS[:2])
    masks = ev.splice_masks(batch.kinds_BT)
    block = adapter.layers[LAYER]
    with torch.inference_mode():
        clean = ev._logits(adapter, batch)
        with replace_block_output(block, zero_splice(masks["text"])):
            text = ev._logits(adapter, batch)
        with replace_block_output(block, zero_splice(masks["image"])):
            image = ev._logits(adapter, batch)
    for b in range(2):
        img_pos = np.flatnonzero(batch.kinds_BT[b] == K["image"])
        real = batch.kinds_BT[b] != K["pad"]  # a pad row attends to whatever the mask leaves: not compared
        upto_img, before_img = real.copy(), real.copy()
        upto_img[img_pos[-1] + 1 :] = False
        before_img[img_pos[0] :] = False
        assert before_img.sum() == 1  # BOS
        torch.testing.assert_close(text[b, upto_img], clean[b, upto_img])
        torch.testing.assert_close(image[b, before_img], clean[b, before_img])
        assert not torch.allclose(text[b, masks["text"][b]], clean[b, masks["text"][b]])
        assert not torch.allclose(image[b, img_pos[-1] + 1 :], clean[b, img_pos[-1] + 1 :])
    assert not (
        masks["all"] & torch.from_numpy(np.isin(batch.kinds_BT, [K["bos"], K["pad"], K["special"]]))
    ).any()


def test_ce_rows_by_hand():
    # clean 1 nat/target, SAE 2, zero 5 -> recovered (5 - 2) / (5 - 1) = 0.75
    res = {
        ("trained", "image"): SplicedCE(2.0, 4.0, 10.0, 2, 1),
        ("base", "text"): SplicedCE(2.0, 2.0, 2.0, 2, 1),
    }
    t = ev.ce_rows(res)
    assert list(t.columns) == ["sae", "position_kind", "metric", "value"]
    v = t.set_index(["sae", "position_kind", "metric"])["value"]
    assert v[("trained", "splice-image", "ce_loss_recovered")] == pytest.approx(0.75)
    assert v[("trained", "splice-image", "ce_delta")] == pytest.approx(1.0)
    assert v[("trained", "splice-image", "n_targets")] == 2
    assert math.isnan(
        v[("base", "splice-text", "ce_loss_recovered")]
    )  # zero ablation costs nothing: undefined


# -- dictionary match and modality sharing ---------------------------------------------------------------------
def test_a_dictionary_compared_with_itself_matches_fully():
    from sae_lens import StandardSAE, StandardSAEConfig

    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=8, d_sae=32, dtype="float32", device="cpu")).eval()
    other = StandardSAE(StandardSAEConfig(d_in=8, d_sae=32, dtype="float32", device="cpu")).eval()
    with torch.no_grad():
        other.W_dec.copy_(torch.randn(32, 8))
    x = torch.randn(200, 8)
    cfg = {"thresholds": [0.5, 0.9], "max_latents": 32}
    same = ev._compare_rows({"trained": sae, "base": sae}, x, cfg)
    assert same["max_cos_mean"] == pytest.approx(1.0, abs=1e-6)
    assert same["frac_max_cos_above_0.9"] == 1.0 and same["one_to_one_frac_above_0.9"] == 1.0
    assert same["code_corr_mean"] == pytest.approx(1.0, abs=1e-6)
    diff = ev._compare_rows({"trained": sae, "base": other}, x, cfg)
    assert diff["max_cos_mean"] < 0.95 and diff["frac_max_cos_above_0.9"] < 1.0


def test_modality_sharing_counts_latents_by_hand():
    # latents of identity_sae(3): 0 fires on image tokens only, 1 on caption tokens only, 2 on both, 3-5 never
    rows = pd.DataFrame(
        {"modality": ["image", "text", "image", "text"], "pair_id": [0, 0, 1, 1], "group": [0, 0, 1, 1]}
    )
    per_row = [
        {
            "image": torch.tensor([[1.0, 0, 1.0]]),
            "prompt": torch.tensor([[0, 5.0, 0]]),
        },  # prompt never counts
        {"caption": torch.tensor([[0, 1.0, 1.0]])},
        {"image": torch.tensor([[2.0, 0, 1.0]])},
        {"caption": torch.tensor([[0, 2.0, 1.0]])},
    ]
    t = ev._sharing_rows(identity_sae(3), rows, per_row, {"lo": 0.1, "hi": 0.9})
    v = dict(zip(t["metric"], t["value"], strict=True))
    assert v["frac_dead"] == pytest.approx(0.5)
    assert v["frac_image-only"] == v["frac_text-only"] == v["frac_shared"] == pytest.approx(1 / 3)
    assert v["coactivation_shared"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="paired"):
        ev._sharing_rows(identity_sae(3), rows.iloc[[0, 2]], per_row, {"lo": 0.1, "hi": 0.9})


def test_without_a_base_sae_the_trained_one_is_evaluated_alone(adapters, tmp_path):
    # sae_training.models.<m>.base_sae: null (no pretrained SAE exists for the decoder, e.g. Mistral-7B)
    adapter = adapters["llava"]
    rows = _manifest().assign(
        group=lambda f: f["pair_id"], label=["a", "a", "b", "b"] * 2
    )  # both in each fold
    training = {
        "heldout_folds": [0],
        "compare": {"thresholds": [0.5], "max_latents": 16},
        "sharing": {"lo": 0.1, "hi": 0.9},
        "sparse_probes": {"k": [1, 2], "settings": {"c_grid": [1.0], "inner_folds": 2, "seeds": [0]}},
    }
    extraction = {"batch_size": 3, "max_tokens": 32}
    tables = ev.evaluate_trained_sae(
        adapter, {"trained": identity_sae(adapter.d_model)}, rows, LAYER, image_dir=_images(tmp_path, 0),
        extraction=extraction, training=training, common={"model": "m", "layer": LAYER},
    )  # fmt: skip
    assert set(tables["eval"]["sae"]) == {"trained"}
    assert tables["compare"].empty and list(tables["compare"].columns) == [
        "model",
        "layer",
        "metric",
        "value",
    ]
    ce = tables["eval"][tables["eval"]["metric"] == "ce_loss_recovered"]
    assert len(ce) == 3 and np.allclose(ce["value"], 1.0, atol=1e-3)  # identity: all recovered on every span
