"""Steps of the SAE stage: fetching / training SAEs, encoding activations, comparing codes across models."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from repshift.atomic import atomic_dir, atomic_path
from repshift.provenance import provenance
from repshift.steps._base import layer_file, step

log = logging.getLogger(__name__)


@step
def fetch_sae(*, input, output, params, **_):
    """Fetch one pretrained SAE (sae-lens release + id) into a local folder (needs the hub once)."""
    from repshift import sae as sae_mod

    sae_mod.fetch_pretrained_sae(params["release"], params["sae_id"], output["sae"])


@step
def train_demo_sae(*, input, output, params, **_):
    """Fit the demo's tiny JumpReLU SAEs, one per layer, on the demo LLM's text-token activations."""
    from repshift import sae as sae_mod
    from repshift.h5io import read_activations

    train = params["train"]
    with atomic_dir(output["saes"]) as tmp:
        for layer in params["layers"]:
            acts = read_activations(layer_file(input["acts"], layer))
            tok = acts.tokens(np.flatnonzero(acts.modality == "text"))
            keep = tok.mask("text")  # BOS, pads and specials never enter SAE training
            sae_mod.train_demo_sae(
                tok.acts_TD[keep],
                tmp / f"layer-{int(layer)}",
                layer=int(layer),
                d_sae=int(train.get("d_sae", 256)),
                steps=int(train.get("steps", 300)),
                seed=int(params["seed"]),
                model_name=train["model"],
            )


def pooled_codes(codes, offsets_N1: np.ndarray, kinds_T: np.ndarray, modality_N: np.ndarray) -> np.ndarray:
    """Per-example mean code over its content tokens (text tokens for text rows, image tokens for image rows)."""
    from scipy import sparse

    from repshift.h5io import POSITION_KINDS

    n, t = len(offsets_N1) - 1, len(kinds_T)
    example_T = np.repeat(np.arange(n), np.diff(offsets_N1))
    want_T = np.where(modality_N[example_T] == "image", POSITION_KINDS["image"], POSITION_KINDS["text"])
    content_T = kinds_T == want_T
    counts_N = np.bincount(example_T[content_T], minlength=n)
    weights = content_T / np.maximum(counts_N[example_T], 1)
    select_NT = sparse.csr_matrix((weights, (example_T, np.arange(t))), shape=(n, t))
    codes_TF = sparse.csr_matrix((codes.values, codes.indices, codes.offsets), shape=(t, codes.d_sae))
    return np.asarray((select_NT @ codes_TF).todense(), dtype=np.float32)


@step
def encode_sae(*, input, output, params, wildcards=None, **_):
    """Encode one model's token-level activations with each layer's SAE; transfer metrics per position kind."""
    from repshift import codes_h5
    from repshift import sae as sae_mod
    from repshift.h5io import read_activations

    wc = wildcards or {}
    device = _device(params.get("device", "auto"))
    sae_dirs = {int(k): v for k, v in params["sae_dirs"].items()}
    tables = []
    with atomic_dir(output["codes"]) as tmp:
        for layer in params["layers"]:
            layer = int(layer)
            acts = read_activations(layer_file(input["acts"], layer))
            tok = acts.tokens()
            sae_path = Path(sae_dirs[layer])
            sae = sae_mod.load_sae(sae_path, device=device)
            model = str(acts.attrs.get("model"))
            sae_mod.check_sae_compat(sae, d_model=acts.d_model, layer=layer, model_name=model)
            codes = sae_mod.encode(sae, tok.acts_TD)
            rows = []
            for kind, sel in token_groups(tok, acts.modality).items():
                metrics = sae_mod.transfer_metrics(sae, tok.acts_TD[sel], codes.take(sel))
                rows += [
                    {
                        "sae": wc.get("sae", ""),
                        "model": model,
                        "dataset": wc.get("dataset", ""),
                        "layer": layer,
                        "position_kind": kind,
                        "metric": m,
                        "value": float(v),
                    }
                    for m, v in metrics.items()
                ]
            attrs = {
                "layer": layer,
                "model": model,
                "sae_path": str(sae_path),
                "neuronpedia_id": sae_mod.sae_neuronpedia_id(sae) or "",
                **provenance(params),
            }
            path = tmp / f"layer-{layer}.codes.h5"
            codes_h5.write_codes(
                path,
                codes,
                example_offsets_N1=tok.offsets_N1,
                pooled_NF=pooled_codes(codes, tok.offsets_N1, tok.kinds_T, acts.modality),
                attrs=attrs,
            )
            codes_h5.write_token_index(
                path, example_id=acts.example_id, modality=acts.modality, kinds_T=tok.kinds_T, ids_T=tok.ids_T
            )
            table = pd.DataFrame(rows)
            table.to_csv(tmp / f"layer-{layer}.transfer.tsv", sep="\t", index=False, float_format="%.6g")
            tables.append(table)
        pd.concat(tables, ignore_index=True).to_csv(
            tmp / "transfer.tsv", sep="\t", index=False, float_format="%.6g"
        )


TOKEN_GROUPS = {
    "text": "text tokens of text-only inputs",
    "image": "image-token positions",
    "prompt": "text tokens of image inputs (the prompt after the image)",
    "bos": "BOS positions (reported apart; never pooled)",
}


def token_groups(tok, modality_N: np.ndarray) -> dict[str, np.ndarray]:
    """Token rows by position kind, with text split by input modality; pads are not stored, specials dropped."""
    from repshift.h5io import POSITION_KINDS

    example_T = np.repeat(np.arange(len(modality_N)), np.diff(tok.offsets_N1))
    image_row_T = modality_N[example_T] == "image"
    text_T = tok.kinds_T == POSITION_KINDS["text"]
    groups = {
        "text": text_T & ~image_row_T,
        "image": tok.kinds_T == POSITION_KINDS["image"],
        "prompt": text_T & image_row_T,
        "bos": tok.kinds_T == POSITION_KINDS["bos"],
    }
    return {k: np.flatnonzero(v) for k, v in groups.items() if v.any()}


def _device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def align_text_tokens(
    base_idx: dict, adapted_idx: dict, *, base: str, adapted: str
) -> tuple[np.ndarray, np.ndarray]:
    """Token rows of the text tokens (no BOS, pads, specials) of the text examples both models saw.

    Raises if an example's token ids differ: a text-only comparison needs identical inputs.
    """
    from repshift.h5io import POSITION_KINDS

    where = {
        e: j
        for j, (e, m) in enumerate(zip(adapted_idx["example_id"], adapted_idx["modality"], strict=True))
        if m == "text"
    }
    sel_a, sel_b = [], []
    for i, (eid, modality) in enumerate(zip(base_idx["example_id"], base_idx["modality"], strict=True)):
        if modality != "text" or eid not in where:
            continue
        j = where[eid]
        a0, a1 = base_idx["offsets"][i], base_idx["offsets"][i + 1]
        b0, b1 = adapted_idx["offsets"][j], adapted_idx["offsets"][j + 1]
        ids_a, ids_b = base_idx["ids_T"][a0:a1], adapted_idx["ids_T"][b0:b1]
        if not np.array_equal(ids_a, ids_b):
            raise ValueError(
                f"example {eid}: token ids differ between {base} and {adapted} "
                f"({ids_a[:8].tolist()}... vs {ids_b[:8].tolist()}...); a text-only comparison needs identical "
                "inputs (same tokenizer vocabulary, same BOS)"
            )
        keep = np.flatnonzero(base_idx["kinds_T"][a0:a1] == POSITION_KINDS["text"])
        sel_a.append(keep + a0)
        sel_b.append(keep + b0)
    if not sel_a:
        raise ValueError(f"no common text examples between {base} and {adapted}")
    return np.concatenate(sel_a), np.concatenate(sel_b)


@step
def compare_sae(*, input, output, params, wildcards=None, **_):
    """Shift between two models' SAE codes at every layer, on identical text tokens (ids asserted equal)."""
    from repshift import codes_h5
    from repshift import sae as sae_mod

    wc = wildcards or {}
    comp = params["comparison"]
    tables, latent_tables = [], []
    for layer in params["layers"]:
        layer = int(layer)
        pa = Path(input["base"]) / f"layer-{layer}.codes.h5"
        pb = Path(input["adapted"]) / f"layer-{layer}.codes.h5"
        base_codes, meta = codes_h5.read_codes(pa, load_pooled=False)
        adapted_codes, _ = codes_h5.read_codes(pb, load_pooled=False)
        rows_a, rows_b = align_text_tokens(
            codes_h5.read_token_index(pa),
            codes_h5.read_token_index(pb),
            base=comp["base"],
            adapted=comp["adapted"],
        )
        np_id = meta["attrs"].get("neuronpedia_id") or None
        metrics, latents = sae_mod.shift_metrics(
            base_codes.take(rows_a), adapted_codes.take(rows_b), neuronpedia_id=np_id
        )
        common = {
            "comparison": wc.get("comparison", ""),
            "base": comp["base"],
            "adapted": comp["adapted"],
            "sae": comp["sae"],
            "dataset": comp["dataset"],
            "layer": layer,
        }
        tables.append(pd.DataFrame([{**common, "metric": k, "value": float(v)} for k, v in metrics.items()]))
        latent_tables.append(latents.assign(**common))
    with atomic_path(output["shift"]) as tmp:
        pd.concat(tables, ignore_index=True).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    with atomic_path(output["latents"]) as tmp:
        pd.concat(latent_tables, ignore_index=True).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
