"""Spliced CE loss: how much of a model's next-token loss an SAE's reconstruction keeps, layer by layer.

For every layer L with an SAE, the model's own forward pass runs three ways on the same text-only token ids:

- **clean**: unchanged;
- **sae**: the output of decoder block L (repshift layer L, what ``blocks.L.hook_resid_post`` reads) is
  replaced by the SAE's reconstruction x̂ = decode(encode(x)) through a forward hook on block L;
- **zero**: the output of block L is replaced by zeros (zero ablation).

``ce_loss_recovered`` = (CE_zero − CE_sae) / (CE_zero − CE_clean): 1 when the SAE loses nothing, 0 when it is
no better than deleting the residual stream (the Kissane et al. / Gemma Scope "loss recovered").

Token policy (one rule, used everywhere here):

- positions: the SAE (or zero) replaces x only at *text* positions; BOS keeps its clean activation (SAEs such
  as Gemma Scope are trained without BOS, whose norm is an outlier), pads are never touched and never seen.
- targets: for a sequence of T real tokens ``<bos> t1 ... t(T-1)`` the targets are tokens 1..T-1 (t1 is
  predicted at BOS); BOS is never a target and pads (left padding) are masked out. CE is the mean over all
  targets of all prompts (token-weighted), in nats.
- the VLM decoder gets the very same ids as the base LLM (``[<bos>] + tokenizer(text)``, no image, no
  token_type_ids), as in extraction (see :mod:`repshift.models`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from repshift.formats.activations_h5 import POSITION_KINDS

log = logging.getLogger(__name__)

#: Metrics written per layer, in this order.
SPLICED_METRICS = ("ce_clean", "ce_sae", "ce_zero", "ce_loss_recovered", "ce_delta", "n_targets", "n_prompts")


@dataclass(frozen=True)
class SplicedCE:
    """CE sums of one layer over all prompts (nats), and the number of target tokens."""

    sum_clean: float
    sum_sae: float
    sum_zero: float
    n_targets: int
    n_prompts: int
    #: per-prompt (clean, SAE, zero) CE sums and target counts, (P, 4), for bootstrap intervals; None: unknown
    per_prompt_P4: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def ce_clean(self) -> float:
        return self.sum_clean / max(self.n_targets, 1)

    @property
    def ce_sae(self) -> float:
        return self.sum_sae / max(self.n_targets, 1)

    @property
    def ce_zero(self) -> float:
        return self.sum_zero / max(self.n_targets, 1)

    @property
    def recovered(self) -> float:
        """(CE_zero − CE_sae) / (CE_zero − CE_clean); NaN when zero ablation costs nothing (undefined)."""
        denom = self.ce_zero - self.ce_clean
        if abs(denom) < 1e-12:
            return math.nan
        return (self.ce_zero - self.ce_sae) / denom

    def metrics(self) -> dict[str, float]:
        return {
            "ce_clean": self.ce_clean,
            "ce_sae": self.ce_sae,
            "ce_zero": self.ce_zero,
            "ce_loss_recovered": self.recovered,
            "ce_delta": self.ce_sae - self.ce_clean,
            "n_targets": float(self.n_targets),
            "n_prompts": float(self.n_prompts),
        }


def next_token_ce_rows(
    logits_BTV: torch.Tensor, ids_BT: torch.Tensor, mask_BT: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row summed next-token CE (nats) and target counts, (B,) each; as :func:`next_token_ce`."""
    mask = mask_BT.bool()
    valid_BT = mask[:, 1:] & mask[:, :-1]
    logits = logits_BTV[:, :-1].float()
    targets = ids_BT[:, 1:].to(logits.device)
    loss_BT = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    ).reshape(targets.shape)
    valid = valid_BT.to(logits.device)
    sums = (loss_BT * valid).sum(dim=1)
    return sums.double().cpu().numpy(), valid.sum(dim=1).cpu().numpy().astype(np.int64)


def next_token_ce(logits_BTV: torch.Tensor, ids_BT: torch.Tensor, mask_BT: torch.Tensor) -> tuple[float, int]:
    """Summed next-token CE (nats) and the number of targets: target t is predicted at t-1, both real tokens.

    With left padding the first real token (BOS) follows a pad, so it is never a target.
    """
    mask = mask_BT.bool()
    valid_BT = mask[:, 1:] & mask[:, :-1]
    logits = logits_BTV[:, :-1][valid_BT].float()
    targets = ids_BT[:, 1:][valid_BT].to(logits.device)
    if targets.numel() == 0:
        return 0.0, 0
    loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    return float(loss), int(targets.numel())


@contextlib.contextmanager
def replace_block_output(
    block: torch.nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Replace a decoder block's output hidden states by ``fn(hidden)`` (Tensor in transformers 5.x, tuple in
    4.x: both handled). The hook is always removed."""

    def hook(_module, _args, output):
        if isinstance(output, (tuple, list)):
            return type(output)([fn(output[0]), *output[1:]])
        return fn(output)

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def sae_splice(sae: Any, positions_BT: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> x with x̂ = sae.decode(sae.encode(x)) at ``positions_BT`` (computed in the SAE's dtype)."""

    def fn(hidden_BTD: torch.Tensor) -> torch.Tensor:
        pos = positions_BT.to(hidden_BTD.device)
        x_ND = hidden_BTD[pos]
        x_hat = sae.decode(sae.encode(x_ND.to(device=sae.device, dtype=sae.dtype)))
        out = hidden_BTD.clone()
        out[pos] = x_hat.to(device=hidden_BTD.device, dtype=hidden_BTD.dtype)
        return out

    return fn


def zero_splice(positions_BT: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> x with zeros at ``positions_BT``."""

    def fn(hidden_BTD: torch.Tensor) -> torch.Tensor:
        out = hidden_BTD.clone()
        out[positions_BT.to(hidden_BTD.device)] = 0
        return out

    return fn


def _logits(adapter: Any, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return adapter.model(**inputs, use_cache=False).logits


def spliced_ce(
    adapter: Any,
    saes: Mapping[int, Any],
    ids_list: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[int, SplicedCE]:
    """Clean, SAE-spliced and zero-ablated CE of ``adapter``'s model on ``ids_list``, for each layer in ``saes``.

    ``adapter``: a :class:`repshift.models.adapter.Adapter` of a decoder stream (causal LM or VLM decoder; text-only
    inputs). ``saes``: {layer: SAE} (anything with ``encode``, ``decode``, ``device`` and ``dtype``).
    ``ids_list``: token ids per prompt, ``[<bos>] + text`` (:meth:`Adapter.text_ids`). One clean forward per
    batch and two per layer; layer L's hook is on ``adapter.layers[L]`` (output of block L).
    """
    if getattr(adapter, "stream", "decoder") != "decoder":
        raise ValueError("spliced CE needs a decoder stream with an LM head, not a vision tower")
    if not ids_list:
        raise ValueError("spliced CE got no prompts")
    layers = sorted(int(k) for k in saes)
    for layer in layers:
        if not 0 <= layer < len(adapter.layers):
            raise ValueError(f"layer {layer} requested but the model has {len(adapter.layers)} blocks")
    order = sorted(range(len(ids_list)), key=lambda i: (len(ids_list[i]), i))  # less padding
    # per prompt: clean CE sum, target count; per layer and prompt: SAE and zero-ablated CE sums
    clean_P, targets_P = np.zeros(len(ids_list)), np.zeros(len(ids_list), dtype=np.int64)
    spliced_LP2 = {layer: np.zeros((len(ids_list), 2)) for layer in layers}
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    with torch.inference_mode():
        for idx in tqdm(batches, desc="spliced CE", unit="batch", disable=not progress, mininterval=5):
            batch = adapter.text_batch([list(ids_list[i]) for i in idx])
            inputs = {k: v.to(adapter.device) for k, v in batch.inputs.items()}
            ids_BT, mask_BT = inputs["input_ids"], inputs["attention_mask"]
            text_BT = torch.from_numpy(batch.kinds_BT == POSITION_KINDS["text"])
            clean_P[idx], targets_P[idx] = next_token_ce_rows(_logits(adapter, inputs), ids_BT, mask_BT)
            for layer in layers:
                block = adapter.layers[layer]
                with replace_block_output(block, sae_splice(saes[layer], text_BT)):
                    spliced_LP2[layer][idx, 0] = next_token_ce_rows(
                        _logits(adapter, inputs), ids_BT, mask_BT
                    )[0]
                with replace_block_output(block, zero_splice(text_BT)):
                    spliced_LP2[layer][idx, 1] = next_token_ce_rows(
                        _logits(adapter, inputs), ids_BT, mask_BT
                    )[0]
    out = {}
    for layer in layers:
        per_prompt = np.column_stack([clean_P, spliced_LP2[layer], targets_P])
        sums = per_prompt.sum(axis=0)
        out[layer] = SplicedCE(
            float(sums[0]), float(sums[1]), float(sums[2]), int(sums[3]), len(ids_list), per_prompt
        )
    for layer, r in out.items():
        log.info(
            "layer %d: CE clean %.4f, SAE %.4f, zero %.4f -> recovered %.3f (%d targets)",
            layer,
            r.ce_clean,
            r.ce_sae,
            r.ce_zero,
            r.recovered,
            r.n_targets,
        )
    return out


#: Spliced metrics that get bootstrap intervals over prompts.
BOOTSTRAP_METRICS = ("ce_clean", "ce_sae", "ce_zero", "ce_loss_recovered", "ce_delta")


def bootstrap_spliced(
    result: SplicedCE, *, n_boot: int = 200, seed: int = 0, confidence: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of :data:`BOOTSTRAP_METRICS` over prompts (resampled with replacement,
    ``n_boot`` times, seeded), each resample's metrics computed from its summed CE and target counts exactly as
    the full set's. NaN bounds without per-prompt sums, with fewer than 2 prompts or with ``n_boot`` 0."""
    nan = {m: (math.nan, math.nan) for m in BOOTSTRAP_METRICS}
    per = result.per_prompt_P4
    if per is None or per.shape[0] < 2 or n_boot < 1:
        return nan
    rng = np.random.default_rng([int(seed), 11])
    draws = {m: [] for m in BOOTSTRAP_METRICS}
    for _ in range(int(n_boot)):
        s = per[rng.integers(0, per.shape[0], size=per.shape[0])].sum(axis=0)
        metrics = SplicedCE(s[0], s[1], s[2], int(s[3]), per.shape[0]).metrics()
        for m in BOOTSTRAP_METRICS:
            draws[m].append(metrics[m])
    tail = 100 * (1 - confidence) / 2
    return {m: tuple(float(x) for x in np.nanpercentile(v, [tail, 100 - tail])) for m, v in draws.items()}


def spliced_table(
    results: Mapping[int, SplicedCE], *, sae: str, model: str, dataset: str, n_boot: int = 200, seed: int = 0
) -> pd.DataFrame:
    """Tidy rows with the transfer tables' columns (position_kind ``text``), one per layer and metric, plus the
    bootstrap interval over prompts (``lo``, ``hi``: :func:`bootstrap_spliced`) and ``n`` prompts."""
    rows = []
    for layer in sorted(results):
        r = results[layer]
        boot = bootstrap_spliced(r, n_boot=n_boot, seed=seed)
        for metric, value in r.metrics().items():
            lo, hi = boot.get(metric, (math.nan, math.nan))
            rows.append(
                {
                    "sae": sae,
                    "model": model,
                    "dataset": dataset,
                    "layer": int(layer),
                    "position_kind": "text",
                    "metric": metric,
                    "value": float(value),
                    "lo": lo,
                    "hi": hi,
                    "n": r.n_prompts,
                }
            )
    columns = ["sae", "model", "dataset", "layer", "position_kind", "metric", "value", "lo", "hi", "n"]
    return pd.DataFrame(rows, columns=columns)


def sample_prompts(texts: Sequence[str], max_prompts: int | None, seed: int) -> list[str]:
    """At most ``max_prompts`` texts, a seeded sample kept in input order (all of them when fewer)."""
    texts = list(texts)
    if max_prompts is None or len(texts) <= int(max_prompts):
        return texts
    keep = np.sort(np.random.default_rng(seed).choice(len(texts), size=int(max_prompts), replace=False))
    return [texts[i] for i in keep]


def spliced_loss_table(
    adapter: Any,
    sae_dirs: Mapping[int, str],
    texts: Sequence[str],
    *,
    max_tokens: int,
    batch_size: int,
    labels: Mapping[str, str],
    n_boot: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """spliced_loss: load and check each layer's SAE, splice it into ``adapter``'s forward on ``texts``, and
    tabulate clean / spliced / zero-ablated CE per layer. ``labels``: ``sae``, ``model`` and ``dataset`` names."""
    from repshift.sae import load as sae_load

    saes = {}
    for layer, path in sorted((int(k), v) for k, v in sae_dirs.items()):
        sae = sae_load.load_sae(path, device=str(adapter.device))
        sae_load.check_sae_compat(sae, d_model=adapter.d_model, layer=layer, model_name=labels["model"])
        saes[layer] = sae
    ids = [adapter.text_ids(t, int(max_tokens))[0] for t in texts]
    results = spliced_ce(adapter, saes, ids, batch_size=int(batch_size), progress=True)
    return spliced_table(
        results, sae=labels["sae"], model=labels["model"], dataset=labels["dataset"], n_boot=n_boot, seed=seed
    )


def text_prompts(manifest_path, max_prompts: int | None, seed: int) -> list[str]:
    """The dataset's text rows, sampled to ``max_prompts`` (spliced CE runs on text); raises when there are none."""
    from repshift.formats.manifest import read_manifest

    manifest, _ = read_manifest(manifest_path)
    texts = manifest.loc[manifest["modality"] == "text", "text"].astype(str).tolist()
    if not texts:
        raise ValueError(f"dataset {manifest_path} has no text rows: spliced CE runs on text")
    return sample_prompts(texts, max_prompts, seed)
