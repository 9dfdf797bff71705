"""Greedy rollouts where only the prefill is edited; decoding then runs from the KV cache, unedited.

``model.generate`` builds every family's decoding inputs (PaliGemma's token types, LLaVA's image features, ...).
The steering hook edits the first ``T0`` positions (the prompt) of any forward call that covers them: with the cache
that is the prefill only; without it (``use_cache=False``) every step recomputes the prompt with the same edit, so
cached and uncached rollouts must agree token for token (a test checks it).
"""

from __future__ import annotations

import numpy as np
import torch

from repshift.models.adapter import Adapter, Batch
from repshift.steering.intervene import steer


def greedy_rollout(
    adapter: Adapter,
    batch: Batch,
    *,
    layer: int | None,
    delta_D: torch.Tensor | None,
    mask_BT: np.ndarray,
    max_new_tokens: int,
    use_cache: bool = True,
) -> list[list[int]]:
    """Generated token ids per row (prompt excluded), greedy, prefill edited at block ``layer`` (None: unedited)."""
    import contextlib

    dtype = next(adapter.model.parameters()).dtype
    inputs = {}
    for k, v in batch.inputs.items():
        v = v.to(adapter.device)
        inputs[k] = v.to(dtype) if v.is_floating_point() else v
    t0 = inputs["input_ids"].shape[1]
    pad = adapter.pad_id
    with contextlib.ExitStack() as stack, torch.inference_mode():
        if layer is not None:
            stack.enter_context(steer(adapter.layers, layer, delta_D, mask_BT, prefill_only=True))
        out = adapter.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            use_cache=use_cache,
            pad_token_id=pad,
        )
    seqs = out if isinstance(out, torch.Tensor) else out.sequences
    return [row[t0:].tolist() for row in seqs.cpu()]


def decode(adapter: Adapter, ids: list[int]) -> str:
    return adapter.tokenizer.decode(ids, skip_special_tokens=True)
