"""Evaluation of an SAE trained on a VLM, by modality, beside the base model's SAE on the same tokens.

One pass of the VLM over held-out rows collects layer L's tokens by kind (image / prompt / caption, as in
:mod:`repshift.sae.train`); :func:`repshift.sae.metrics.transfer_metrics` gives FVU, L0, dead and dense
fractions per kind for each SAE. CE loss recovered (:mod:`repshift.sae.spliced`'s hooks and definition) is
measured on image inputs with one caption each: the SAE's reconstruction (or zeros) replaces block L's output on
the *text* positions, on the *image* positions, or on *all* content positions (BOS, pads, specials never). Targets
(tokens predicted from t-1) are the text positions that attend causally: for a prefix-LM family (PaliGemma,
``token_type_ids``) the caption goes in as the processor's suffix and only its tokens are targets (the prefix
``image + prompt`` attends both ways, so a prefix token is visible from t-1); for the others the text is
``image_prompt + " " + caption`` and every text position is a target.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from repshift.formats.activations_h5 import POSITION_KINDS
from repshift.sae.spliced import SplicedCE, replace_block_output, sae_splice, zero_splice

if TYPE_CHECKING:
    from repshift.models.adapter import Batch

log = logging.getLogger(__name__)

SPLICE_SPANS = ("text", "image", "all")


def _ce(logits_BTV: torch.Tensor, ids_BT: torch.Tensor, target_BT: torch.Tensor) -> tuple[float, int]:
    valid = target_BT[:, 1:].to(logits_BTV.device)
    logits = logits_BTV[:, :-1][valid].float()
    targets = ids_BT[:, 1:].to(logits_BTV.device)[valid]
    if targets.numel() == 0:
        return 0.0, 0
    return float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum")), int(targets.numel())


def _logits(adapter, batch) -> torch.Tensor:
    dtype = next(adapter.model.parameters()).dtype
    inputs = {
        k: (v.to(adapter.device).to(dtype) if v.is_floating_point() else v.to(adapter.device))
        for k, v in batch.inputs.items()
    }
    return adapter.model(**inputs, use_cache=False).logits


def spliced_ce_by_span(
    adapter, saes: Mapping[str, object], rows: pd.DataFrame, layer: int, *, image_dir, batch_size: int
) -> dict[tuple[str, str], SplicedCE]:
    """{(sae name, span): SplicedCE} on the image rows of ``rows``, each with its first caption
    (:func:`image_caption_batch`)."""
    from repshift.data.images import load_example_image

    img = rows[rows["modality"] == "image"]
    caps = img["captions"].astype(str).str.split(" ||| ", regex=False).str[0]
    block = adapter.layers[layer]
    sums = {(s, span): [0.0, 0.0] for s in saes for span in SPLICE_SPANS}
    clean, n_t = 0.0, 0
    with torch.inference_mode():
        for s in range(0, len(img), batch_size):
            chunk = img.iloc[s : s + batch_size]
            images = [load_example_image(r, image_dir) for _, r in chunk.iterrows()]
            batch, tgt = image_caption_batch(
                adapter, images, adapter.spec.image_prompt, caps.iloc[s : s + batch_size].tolist()
            )
            ids = batch.inputs["input_ids"]
            c, n = _ce(_logits(adapter, batch), ids, tgt)
            clean, n_t = clean + c, n_t + n
            for span, m in splice_masks(batch.kinds_BT).items():
                with replace_block_output(block, zero_splice(m)):
                    zero = _ce(_logits(adapter, batch), ids, tgt)[0]  # the same for every SAE
                for name, sae in saes.items():
                    with replace_block_output(block, sae_splice(sae, m)):
                        sums[(name, span)][0] += _ce(_logits(adapter, batch), ids, tgt)[0]
                    sums[(name, span)][1] += zero
    return {key: SplicedCE(clean, v[0], v[1], n_t, len(img)) for key, v in sums.items()}


def splice_masks(kinds_BT: np.ndarray) -> dict[str, torch.Tensor]:
    """{span: positions spliced}: text, image, and both (never BOS, pads or special tokens)."""
    masks = {
        "text": torch.from_numpy(kinds_BT == POSITION_KINDS["text"]),
        "image": torch.from_numpy(kinds_BT == POSITION_KINDS["image"]),
    }
    masks["all"] = masks["text"] | masks["image"]
    return masks


def image_caption_batch(adapter, images, prompt: str, captions) -> tuple[Batch, torch.Tensor]:
    """One image and one caption per row, and the CE targets (text positions that attend causally).

    A prefix-LM family (``token_type_ids`` among its image inputs: PaliGemma) gets ``prompt`` as the prefix and the
    caption as the processor's ``suffix``: only suffix tokens attend causally, so only they are targets. Any other
    family gets ``prompt + " " + caption`` after the image, every text position a target.
    """
    from repshift.models.adapter import Batch

    token = getattr(adapter.processor, "image_token", "<image>")
    kw = dict(images=list(images), return_tensors="pt", padding=True)
    prefix_lm = "token_type_ids" in adapter.family.image_inputs
    if prefix_lm:
        enc = adapter.processor(
            text=[adapter.family.image_text(token, prompt)] * len(images), suffix=list(captions), **kw
        )
    else:
        full = [adapter.family.image_text(token, f"{prompt} {c}".strip()) for c in captions]
        enc = adapter.processor(text=full, **kw)
    inputs = {k: v for k, v in enc.items() if isinstance(v, torch.Tensor) and k != "labels"}
    ids, mask = inputs["input_ids"].numpy(), inputs["attention_mask"].numpy()
    batch = Batch(inputs, adapter.kinds(ids, mask), ids)
    target_BT = batch.kinds_BT == POSITION_KINDS["text"]
    if prefix_lm:
        target_BT &= inputs["token_type_ids"].numpy() == 1
    return batch, torch.from_numpy(target_BT)


def modality_metric_rows(saes: Mapping[str, object], tokens: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """Tidy rows (``sae``, ``position_kind``, ``metric``, ``value``) of transfer metrics per SAE and kind."""
    from repshift.sae.metrics import transfer_metrics

    rows = []
    for name, sae in saes.items():
        for kind, x in tokens.items():
            if x.shape[0] == 0:
                continue
            for metric, value in transfer_metrics(sae, x).items():
                rows.append({"sae": name, "position_kind": kind, "metric": metric, "value": float(value)})
    return pd.DataFrame(rows, columns=["sae", "position_kind", "metric", "value"])


def ce_rows(results: Mapping[tuple[str, str], SplicedCE]) -> pd.DataFrame:
    rows = [
        {"sae": name, "position_kind": f"splice-{span}", "metric": m, "value": float(v)}
        for (name, span), r in results.items()
        for m, v in r.metrics().items()
    ]
    return pd.DataFrame(rows, columns=["sae", "position_kind", "metric", "value"])


def encode_rows(adapter, rows: pd.DataFrame, layer: int, *, image_dir, batch_size: int, max_tokens: int):
    """Per row of ``rows`` (in order), layer ``layer``'s content tokens by kind: a list of {kind: (n, d)}."""
    from repshift.data.images import load_example_image
    from repshift.models.extract import run_capture
    from repshift.sae.train import split_kinds

    out: list[dict[str, torch.Tensor]] = [{} for _ in range(len(rows))]
    mod = rows["modality"].to_numpy()
    for modality in ("image", "text"):
        idx = np.flatnonzero(mod == modality)
        for s in range(0, len(idx), batch_size):
            sel = idx[s : s + batch_size]
            chunk = rows.iloc[sel]
            if modality == "image":
                images = [load_example_image(r, image_dir) for _, r in chunk.iterrows()]
                batch = adapter.image_batch(images, adapter.spec.image_prompt)
            else:
                batch = adapter.text_batch([adapter.text_ids(str(t), max_tokens)[0] for t in chunk["text"]])
            hidden = run_capture(adapter, batch, [layer])[layer].float().cpu()
            masks = split_kinds(batch.kinds_BT, np.full(len(sel), modality == "image"))
            for b, i in enumerate(sel):
                out[i] = {k: hidden[b][torch.from_numpy(m[b])] for k, m in masks.items() if m[b].any()}
    return out


def evaluate_trained_sae(
    adapter,
    saes: Mapping[str, object],
    manifest: pd.DataFrame,
    layer: int,
    *,
    image_dir,
    extraction: Mapping,
    training: Mapping,
    common: Mapping,
) -> dict[str, pd.DataFrame]:
    """evaluate_vlm_sae: the ``trained`` SAE beside the ``base`` one (when given) at ``layer``, from one pass over
    ``manifest``.

    ``extraction``/``training``: the config's sections; ``common``: columns put on every row (model, layer).
    Returns the tables ``eval`` (metrics by token kind, spliced CE by span), ``compare`` (dictionary match, code
    correlation), ``sharing`` (modality sharing) and ``sparse`` (k-sparse probes).
    """
    per_row = encode_rows(
        adapter, manifest, layer, image_dir=image_dir, batch_size=extraction["batch_size"],
        max_tokens=extraction["max_tokens"],
    )  # fmt: skip
    held = manifest["fold"].isin(training["heldout_folds"]).to_numpy()
    tokens = _kind_tokens([r for r, h in zip(per_row, held, strict=True) if h], adapter.d_model)
    ce = spliced_ce_by_span(
        adapter, saes, manifest[held], layer, image_dir=image_dir, batch_size=extraction["batch_size"]
    )
    compare = _compare_rows(saes, tokens["caption"], training["compare"]) if "base" in saes else {}
    return {
        "eval": pd.concat([modality_metric_rows(saes, tokens), ce_rows(ce)]).assign(**common),
        "compare": pd.DataFrame(
            [{**common, "metric": k, "value": v} for k, v in compare.items()],
            columns=[*common, "metric", "value"],
        ),
        "sharing": _sharing_rows(saes["trained"], manifest, per_row, training["sharing"]).assign(**common),
        "sparse": _sparse_rows(
            saes["trained"], manifest, per_row, adapter.d_model, training["sparse_probes"]
        ).assign(**common),
    }


def _compare_rows(saes: Mapping, caption_TD: torch.Tensor, cfg: Mapping) -> dict[str, float]:
    """Dictionary match of the two decoders and the mean correlation of their codes on caption tokens."""
    from repshift.sae import compare as sae_compare

    W = {k: s.W_dec.detach().float().cpu().numpy() for k, s in saes.items()}
    metrics, _ = sae_compare.compare_dictionaries(
        W["trained"], W["base"], thresholds=cfg["thresholds"], max_latents=cfg["max_latents"]
    )
    codes = {k: s.encode(caption_TD).detach().float().numpy() for k, s in saes.items()}
    corr = sae_compare.code_correlation(codes["trained"], codes["base"])
    metrics["code_corr_mean"] = float(np.nanmean(corr)) if np.isfinite(corr).any() else float("nan")
    return metrics


def _sparse_rows(sae, manifest: pd.DataFrame, per_row, d: int, cfg: Mapping) -> pd.DataFrame:
    """k-sparse probes on pooled codes beside pooled activations, per modality with >= 4 rows and 2 labels."""
    from repshift.probes.cv import ProbeSettings
    from repshift.probes.sparse import sparse_probe_table

    pooled = _pooled(sae, per_row, d)
    settings = ProbeSettings.from_dict(cfg["settings"])
    tables = []
    for modality in ("image", "text"):
        m = (manifest["modality"] == modality).to_numpy()
        if m.sum() < 4 or manifest.loc[m, "label"].nunique() < 2:
            continue
        t = sparse_probe_table(
            pooled["codes"][m], pooled["acts"][m], manifest.loc[m, "label"].to_numpy(),
            manifest.loc[m, "fold"].to_numpy(), ks=cfg["k"], settings=settings,
        )  # fmt: skip
        tables.append(t.assign(modality=modality))
    return pd.concat(tables, ignore_index=True)


def _kind_tokens(per_row, d: int):
    out = {}
    for kind in ("image", "prompt", "caption"):
        parts = [r[kind] for r in per_row if kind in r]
        out[kind] = torch.cat(parts) if parts else torch.zeros(0, d)
    return out


def _pooled(sae, per_row, d: int) -> dict[str, np.ndarray]:
    """Per row: mean over its image tokens (image rows) or caption tokens (text rows) of codes and activations."""
    codes, acts = [], []
    with torch.no_grad():
        for r in per_row:
            x = r.get("image", r.get("caption", torch.zeros(1, d)))
            acts.append(x.mean(0).numpy())
            codes.append(sae.encode(x).float().mean(0).numpy())
    return {"codes": np.stack(codes), "acts": np.stack(acts)}


def _sharing_rows(sae, manifest: pd.DataFrame, per_row, thresholds) -> pd.DataFrame:
    """Modality sharing over pairs (image row, caption row with the same pair_id)."""
    from repshift.sae import sharing

    d_sae = int(sae.cfg.d_sae)
    mass_i, mass_t, n_i, n_t = np.zeros(d_sae), np.zeros(d_sae), 0, 0
    act_i, act_t = [], []
    by_pair: dict = {}
    for i, row in manifest.iterrows():
        by_pair.setdefault(row.get("pair_id", row["group"]), {}).setdefault(row["modality"], i)
    with torch.no_grad():
        for pair in by_pair.values():
            if "image" not in pair or "text" not in pair:
                continue
            zi = sae.encode(per_row[pair["image"]]["image"]).float().numpy()
            zt = sae.encode(per_row[pair["text"]]["caption"]).float().numpy()
            mass_i, mass_t, n_i, n_t = mass_i + zi.sum(0), mass_t + zt.sum(0), n_i + len(zi), n_t + len(zt)
            act_i.append((zi > 0).any(0))
            act_t.append((zt > 0).any(0))
    if not act_i:
        raise ValueError("modality sharing needs paired image/caption rows (a dataset with modality: paired)")
    metrics, _ = sharing.sharing_summary(
        mass_i, n_i, mass_t, n_t, np.array(act_i), np.array(act_t), thresholds=thresholds
    )
    return pd.DataFrame([{"metric": k, "value": v} for k, v in metrics.items()])
