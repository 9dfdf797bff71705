"""One steering job: every direction, write layer and alpha at one (model, pair, layer), plus rollouts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from repshift.config import ModelSpec
from repshift.steering import measures as M
from repshift.steering.directions import Directions, fold_probe, kind_of, pair_labels
from repshift.steering.intervene import position_mask
from repshift.steering.rollouts import decode, greedy_rollout

log = logging.getLogger(__name__)


def _rows(manifest: pd.DataFrame, modality: str, heldout: int, source: int, params: Mapping) -> tuple:
    rows = manifest[manifest["modality"] == modality]
    held = rows[(rows["fold"] == heldout) & (rows["label"] == source)].head(int(params["max_examples"]))
    train = rows[rows["fold"] != heldout].head(int(params["norm_examples"]))
    if len(held) < 2:
        raise ValueError(f"fewer than 2 held-out {modality} rows of the source class in fold {heldout}")
    return held.reset_index(drop=True), train.reset_index(drop=True)


def _caption(row) -> str:
    if row["modality"] == "text":
        return str(row["text"])
    return str(row["captions"]).split("|||")[0].strip()


def _inputs(adapter, rows: pd.DataFrame, image_dir) -> tuple[list | None, list[str]]:
    from repshift.data.images import load_example_image

    images = [load_example_image(r, image_dir) for _, r in rows.iterrows()] if adapter.spec.is_vlm else None
    return images, [_caption(r) for _, r in rows.iterrows()]


def _readout(fp, f: int, source: int, target: int):
    probe = fp.probe(f)
    classes = [int(c) for c in probe.classes_K]

    def score(X_ND):
        s = probe.decision_function(X_ND)
        if probe.is_binary:
            return s if classes.index(target) == 1 else -s
        return s[:, classes.index(target)] - s[:, classes.index(source)]

    return score


def _run_edit(adapter, batches, edit, positions, modality, readouts) -> dict:
    parts = [
        M.measure_edit(
            adapter, edit, question=q, captions=c, positions=positions, modality=modality, readouts=readouts
        )
        for q, c in batches
    ]
    return {
        "efficacy": np.concatenate([p["efficacy"] for p in parts]),
        "damage": np.concatenate([p["damage"] for p in parts]),
        "persistence": {r: np.concatenate([p["persistence"][r] for p in parts]) for r in readouts},
    }


def steer_layer(
    spec: ModelSpec,
    location: str,
    *,
    input: Mapping[str, Any],
    params: Mapping[str, Any],
    pair_name: str,
    layer: int,
) -> tuple[pd.DataFrame, list[dict]]:
    """The measures table (rows per write layer, direction, alpha, measure) and the rollout records."""
    from repshift.formats import manifest as formats_manifest
    from repshift.models.adapter import load_adapter

    ext, pair = params["extraction"], params["pair"]
    adapter = load_adapter(spec, location=location, dtype=ext["dtype"], device=ext["device"])
    modality = "image" if spec.is_vlm else "text"
    positions = params["positions"] if params["positions"] != "auto" else modality
    source, target = pair_labels(input["manifest"], pair)
    manifest, _ = formats_manifest.read_manifest(input["manifest"])
    heldout = int(params["heldout_fold"])
    held, train = _rows(manifest, modality, heldout, source, params)
    dirs = Directions.load(str(input["directions"]).removesuffix(".safetensors"))
    image_dir = input.get("images") or None
    bs = int(params["batch_size"])
    question = params["question"].format(source=pair["source"], target=pair["target"])
    toks = (M.word_token(adapter, pair["source"]), M.word_token(adapter, pair["target"]))
    if toks[0] == toks[1]:
        raise ValueError(
            f"{pair['source']!r} and {pair['target']!r} share their first token: the two-choice "
            "efficacy is undefined; choose other class words"
        )
    batches = _batches(adapter, held, image_dir, bs, question, toks)
    t_images, t_caps = _inputs(adapter, train, image_dir)
    norm_batch = (
        adapter.image_batch(t_images, spec.image_prompt)
        if t_images
        else adapter.text_batch([adapter.text_ids(c, 512)[0] for c in t_caps])
    )
    norm = M.mean_residual_norm(adapter, norm_batch, layer, positions)
    readouts = {}
    for r, weights in zip(params["readout_layers"], _as_list(input["probes"]), strict=True):
        fp, f = fold_probe(weights, spec.name, modality, heldout)
        readouts[int(r)] = _readout(fp, f, source, target)
    log.info(
        "%s layer %d: ||h|| = %.3f over %s positions; %d held-out rows",
        spec.name,
        layer,
        norm,
        positions,
        len(held),
    )
    clean = _run_edit(adapter, batches, M.Edit(), positions, modality, readouts)
    rows = []
    alphas = sorted({0.0, *map(float, params["alphas"])})
    for name in dirs.names:
        v = torch.as_tensor(dirs[name], dtype=torch.float32)
        for wl in params["write_layers"] if kind_of(name) != "random" else [layer]:
            for alpha in alphas:
                edit = M.Edit(int(wl), alpha * norm * v)
                edited = _run_edit(adapter, batches, edit, positions, modality, readouts)
                key = dict(
                    model=spec.name,
                    pair=pair_name,
                    layer=layer,
                    write_layer=int(wl),
                    direction=name,
                    kind=kind_of(name),
                    alpha=alpha,
                )
                rows += M.difference_rows(edited, clean, **key)
    table = pd.DataFrame(rows)
    table["residual_norm"] = norm
    return table, _rollouts(adapter, held, image_dir, dirs, norm, layer, positions, params, pair_name)


def _batches(adapter, held, image_dir, bs: int, question: str, toks: tuple[int, int]) -> list:
    """(question batch, source token, target token), (caption batch, caption lengths) per batch of held-out rows."""
    out = []
    for s in range(0, len(held), bs):
        images, caps = _inputs(adapter, held.iloc[s : s + bs], image_dir)
        q = M.question_batch(adapter, images, caps, question)
        out.append(((q, *toks), M.caption_batch(adapter, images, caps)))
    return out


def _as_list(x) -> list:
    return [x] if isinstance(x, str) else list(x)


def _rollouts(adapter, held, image_dir, dirs, norm, layer, positions, params, pair_name) -> list[dict]:
    ro = {
        "n_examples": 2,
        "max_new_tokens": 16,
        "alphas": [1.0],
        "text_prompt": "This is a picture of a",
        **(params.get("rollouts") or {}),
    }
    rows = held.head(int(ro["n_examples"]))
    if rows.empty:
        return []
    images, caps = _inputs(adapter, rows, image_dir)
    if images is not None:
        batch = adapter.image_batch(images, adapter.spec.image_prompt)
    else:
        batch = adapter.text_batch([adapter.text_ids(f"{c} {ro['text_prompt']}", 512)[0] for c in caps])
    mask = position_mask(batch.kinds_BT, positions)
    out = []
    names = [n for n in dirs.names if kind_of(n) != "random"] + [n for n in dirs.names if n == "random-0"]
    plans = [("none", 0.0)] + [(n, float(a)) for n in names for a in ro["alphas"]]
    for name, alpha in plans:
        delta = None if name == "none" else alpha * norm * torch.as_tensor(dirs[name], dtype=torch.float32)
        ids = greedy_rollout(
            adapter,
            batch,
            layer=None if delta is None else layer,
            delta_D=delta,
            mask_BT=mask,
            max_new_tokens=int(ro["max_new_tokens"]),
        )
        for (_, r), seq in zip(rows.iterrows(), ids, strict=True):
            out.append(
                {
                    "model": adapter.spec.name,
                    "example_id": str(r["example_id"]),
                    "pair": pair_name,
                    "layer": layer,
                    "direction": name,
                    "kind": kind_of(name),
                    "alpha": alpha,
                    "text": decode(adapter, seq),
                }
            )
    return out
