"""Steering measures over held-out inputs, each with a t interval over examples.

*efficacy*: change in ``logit(target word) - logit(source word)`` (first token of each word, next-token logits
after a fixed two-choice question) on held-out inputs of the source class; *damage*: change in the mean NLL of the
held-out paired captions under the same edit; *persistence*: change in the saved probes' target-minus-source
readout at the write layer and later layers (pooled exactly as extraction pools). Every value is a per-example
difference from the same example's unedited forward, so ``alpha = 0`` is exactly 0.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from repshift.formats.activations_h5 import POSITION_KINDS
from repshift.models.adapter import Adapter, Batch
from repshift.models.extract import capture_layers, pool
from repshift.steering.intervene import last_positions, position_mask, steer

MEASURES = ("efficacy", "damage", "persistence")


def t_interval(x_N: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t interval of ``x_N`` (NaN bounds for fewer than 2 values)."""
    x = np.asarray(x_N, dtype=np.float64)
    mean = float(x.mean()) if x.size else float("nan")
    if x.size < 2:
        return mean, float("nan"), float("nan")
    sem = float(x.std(ddof=1) / np.sqrt(x.size))
    if sem == 0:
        return mean, mean, mean
    lo, hi = stats.t.interval(level, x.size - 1, loc=mean, scale=sem)
    return mean, float(lo), float(hi)


def word_token(adapter: Adapter, word: str) -> int:
    """First token id of ``" " + word`` (the word as the answer after ``Answer:``)."""
    ids = adapter.tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"the tokenizer of {adapter.spec.name} gives no token for the class word {word!r}")
    return int(ids[0])


def question_batch(adapter: Adapter, images: Sequence | None, texts: Sequence[str], question: str) -> Batch:
    """The two-choice question about each image (VLMs) or after each caption (text-only models)."""
    if images is not None:
        return adapter.image_batch(images, question)
    return adapter.text_batch([adapter.text_ids(f"{t} {question}", 512)[0] for t in texts])


def caption_batch(
    adapter: Adapter, images: Sequence | None, captions: Sequence[str]
) -> tuple[Batch, np.ndarray]:
    """Each image (with the model's image prompt) followed by its caption, and the caption's token count per row.

    PaliGemma's processor takes the caption as ``suffix`` (causal attention over it, as in training); other VLMs get
    it appended to the prompt text; text-only models read ``[<bos>] + caption``.
    """
    if images is None:
        ids = [adapter.text_ids(c, 512)[0] for c in captions]
        n_bos = 1 if adapter.bos_id is not None else 0
        return adapter.text_batch(ids), np.array([len(x) - n_bos for x in ids])
    proc = adapter.processor
    prompt = adapter.spec.image_prompt
    if "suffix" in inspect.signature(type(proc).__call__).parameters:
        enc = proc(
            text=[prompt] * len(images),
            images=list(images),
            suffix=list(captions),
            return_tensors="pt",
            padding=True,
        )
        n_B = (enc["labels"] != -100).sum(1).numpy()
        inputs = {k: v for k, v in enc.items() if isinstance(v, torch.Tensor) and k != "labels"}
        ids, mask = inputs["input_ids"].numpy(), inputs["attention_mask"].numpy()
        return Batch(inputs, adapter.kinds(ids, mask), ids), n_B
    token = getattr(proc, "image_token", "<image>")
    head = adapter.family.image_text(token, prompt)
    tok = adapter.tokenizer
    n_B = np.array([len(tok(f"{head} {c}")["input_ids"]) - len(tok(head)["input_ids"]) for c in captions])
    texts = [f"{head} {c}" for c in captions]
    enc = proc(text=texts, images=list(images), return_tensors="pt", padding=True)
    inputs = {k: v for k, v in enc.items() if isinstance(v, torch.Tensor) and k != "labels"}
    ids, mask = inputs["input_ids"].numpy(), inputs["attention_mask"].numpy()
    return Batch(inputs, adapter.kinds(ids, mask), ids), n_B


def model_forward(adapter: Adapter, batch: Batch) -> torch.Tensor:
    """Full forward (no cache); the logits as float32 on CPU."""
    dtype = next(adapter.model.parameters()).dtype
    inputs = {}
    for k, v in batch.inputs.items():
        v = v.to(adapter.device)
        inputs[k] = v.to(dtype) if v.is_floating_point() else v
    with torch.inference_mode():
        out = adapter.model(**inputs, use_cache=False)
    return out.logits.float().cpu()


@dataclass(frozen=True)
class Edit:
    """One intervention: ``delta_D`` added at the output of block ``layer`` (None: the unedited forward)."""

    layer: int | None = None
    delta_D: torch.Tensor | None = None


def edited_forward(
    adapter: Adapter, batch: Batch, edit: Edit, mask_BT: np.ndarray, readout_layers: Sequence[int] = ()
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Logits and the outputs of ``readout_layers`` under ``edit`` (the capture hooks are registered after the
    steering hook, so a readout at the write layer sees the edited tensor)."""
    import contextlib

    with contextlib.ExitStack() as stack:
        if edit.layer is not None:
            stack.enter_context(steer(adapter.layers, edit.layer, edit.delta_D, mask_BT))
        captured = stack.enter_context(
            capture_layers(adapter.layers, list(readout_layers) or [0], stop=False)
        )
        logits = model_forward(adapter, batch)
        return logits, {k: v.float().cpu() for k, v in captured.items() if k in readout_layers}


def last_logits(logits_BTV: torch.Tensor, kinds_BT: np.ndarray) -> torch.Tensor:
    """Next-token logits at each row's last non-pad position."""
    nonpad = kinds_BT != POSITION_KINDS["pad"]
    last = last_positions(nonpad, np.ones(len(nonpad), dtype=np.int64))
    idx = torch.from_numpy(last.argmax(1))
    return logits_BTV[torch.arange(logits_BTV.shape[0]), idx]


def log_odds(logits_BTV: torch.Tensor, kinds_BT: np.ndarray, source_tok: int, target_tok: int) -> np.ndarray:
    last = last_logits(logits_BTV, kinds_BT)
    return (last[:, target_tok] - last[:, source_tok]).double().numpy()


def caption_nll(logits_BTV: torch.Tensor, batch: Batch, n_caption_B: np.ndarray) -> np.ndarray:
    """Mean NLL per row of its last ``n_caption_B[b]`` tokens (the caption), each predicted from the position before."""
    ids = torch.as_tensor(batch.ids_BT)
    logp = torch.log_softmax(logits_BTV[:, :-1].double(), dim=-1)
    tok_lp = logp.gather(-1, ids[:, 1:, None])[..., 0].numpy()
    target = last_positions(batch.kinds_BT != POSITION_KINDS["pad"], n_caption_B)[:, 1:]
    return -(tok_lp * target).sum(1) / np.maximum(target.sum(1), 1)


def probe_scores(hidden_BTD: torch.Tensor, kinds_BT: np.ndarray, modality: str, readout) -> np.ndarray:
    """``readout(pooled_ND)`` on each row pooled as extraction pools it (mean over the modality's tokens)."""
    pooled = pool(hidden_BTD, kinds_BT, [modality] * hidden_BTD.shape[0])["mean"]
    return np.asarray(readout(pooled.astype(np.float64)), dtype=np.float64)


def mean_residual_norm(adapter: Adapter, batch: Batch, layer: int, positions: str) -> float:
    """Mean L2 norm of the output of block ``layer`` over the masked positions of ``batch`` (clean forward)."""
    from repshift.models.extract import run_capture

    hidden = run_capture(adapter, batch, [layer])[layer].float().cpu()
    mask = torch.from_numpy(position_mask(batch.kinds_BT, positions))
    if not mask.any():
        raise ValueError(
            f"no {positions} positions in the norm batch of {adapter.spec.name}; check steering.positions"
        )
    return float(hidden[mask].norm(dim=-1).mean())


def summarise(values_N: np.ndarray, **key) -> dict:
    mean, lo, hi = t_interval(values_N)
    return {**key, "value": mean, "ci_low": lo, "ci_high": hi, "n": int(np.size(values_N))}


def measure_edit(
    adapter: Adapter,
    edit: Edit,
    *,
    question: tuple[Batch, int, int],
    captions: tuple[Batch, np.ndarray],
    positions: str,
    modality: str,
    readouts: Mapping,
) -> dict[str, np.ndarray | dict[int, np.ndarray]]:
    """Per-example efficacy score, caption NLL and probe readouts under one edit (or none)."""
    q_batch, src_tok, tgt_tok = question
    c_batch, n_cap = captions
    q_mask = position_mask(q_batch.kinds_BT, positions)
    logits, _ = edited_forward(adapter, q_batch, edit, q_mask)
    c_mask = position_mask(c_batch.kinds_BT, positions, continuation_B=n_cap)
    c_logits, hidden = edited_forward(adapter, c_batch, edit, c_mask, sorted(readouts))
    return {
        "efficacy": log_odds(logits, q_batch.kinds_BT, src_tok, tgt_tok),
        "damage": caption_nll(c_logits, c_batch, n_cap),
        "persistence": {
            r: probe_scores(hidden[r], c_batch.kinds_BT, modality, readouts[r]) for r in sorted(readouts)
        },
    }


def difference_rows(edited: Mapping, clean: Mapping, **key) -> list[dict]:
    """Tidy rows: each measure's per-example change from the unedited forward, with its interval."""
    rows = []
    for measure in ("efficacy", "damage"):
        rows.append(
            summarise(
                edited[measure] - clean[measure],
                **key,
                measure=measure,
                readout_layer=key["layer"],
                baseline=float(np.mean(clean[measure])),
            )
        )
    for r, scores in edited["persistence"].items():
        base = clean["persistence"][r]
        rows.append(
            summarise(
                scores - base, **key, measure="persistence", readout_layer=r, baseline=float(np.mean(base))
            )
        )
    return rows
