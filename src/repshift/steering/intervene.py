"""The intervention ``h <- h + alpha * ||h_L|| * v`` at the output of block L, on a position mask.

The write happens at the very hook point extraction reads (:func:`repshift.models.extract.capture_layers`: a forward
hook on decoder block L, layer L = ``hidden_states[L + 1]``), so a probe fit on layer-L activations reads exactly the
tensor the edit writes. Positions are chosen by the adapter's position kinds (:data:`POSITION_KINDS`), never by
offsets, so PaliGemma's image prefix, LLaVA's expanded image tokens and text-only LLMs are handled alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from repshift.formats.activations_h5 import POSITION_KINDS

#: Position masks: which positions of an input an edit writes to.
POSITION_MASKS = ("image", "text", "prompt", "all")


def position_mask(
    kinds_BT: np.ndarray, positions: str, continuation_B: np.ndarray | None = None
) -> np.ndarray:
    """Boolean ``(B, T)`` mask of the positions an edit writes to.

    ``image``: image tokens; ``text``: text tokens (BOS, pads and special tokens excluded); ``all``: every non-pad
    position; ``prompt``: every non-pad position before ``prompt_len_B[b]`` (the input before any appended caption,
    counted from the right edge of a left-padded row; default: the whole row). ``auto`` is resolved by the caller.
    """
    if positions not in POSITION_MASKS:
        raise ValueError(f"unknown steering positions {positions!r}; use one of {', '.join(POSITION_MASKS)}")
    kinds = np.asarray(kinds_BT)
    if positions == "image":
        return kinds == POSITION_KINDS["image"]
    if positions == "text":
        return kinds == POSITION_KINDS["text"]
    mask = kinds != POSITION_KINDS["pad"]
    if positions == "prompt" and continuation_B is not None:
        mask &= ~last_positions(mask, continuation_B)
    return mask


def last_positions(nonpad_BT: np.ndarray, n_B: np.ndarray) -> np.ndarray:
    """Boolean ``(B, T)``: the last ``n_B[b]`` True positions of each row of ``nonpad_BT`` (left or right padding)."""
    rank_BT = np.cumsum(nonpad_BT[:, ::-1], axis=1)[
        :, ::-1
    ]  # 1 at the last non-pad position, 2 before it, ...
    return nonpad_BT & (rank_BT <= np.asarray(n_B)[:, None])


@contextlib.contextmanager
def steer(
    layers_mod: torch.nn.ModuleList,
    layer: int,
    delta_D: torch.Tensor,
    mask_BT: np.ndarray | torch.Tensor,
    *,
    prefill_only: bool = False,
) -> Iterator[dict]:
    """Add ``delta_D`` to the output of block ``layer`` at the positions of ``mask_BT``; the hook is always removed.

    ``delta_D`` is the whole edit (``alpha * norm * v``). With ``prefill_only``, the edit is written to the first
    ``T0 = mask_BT.shape[1]`` positions of any call that covers them (the prefill, or an uncached forward over the
    prompt plus generated tokens) and never to a cached decoding step (one new position). Decoder blocks return a
    Tensor in transformers 5.x and a tuple in 4.x: both are handled. Yields a dict counting edited calls.
    """
    mask = torch.as_tensor(np.asarray(mask_BT), dtype=torch.bool)
    t0 = mask.shape[1]
    state = {"calls": 0, "edited": 0}

    def hook(_module, _args, output):
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        state["calls"] += 1
        t = hidden.shape[1]
        if prefill_only and t < t0:
            return None
        if not prefill_only and t != t0:
            raise ValueError(
                f"steering mask covers {t0} positions but block {layer} produced {t}: build the mask from the "
                "same batch the model runs on"
            )
        m = mask.to(hidden.device)
        if t > t0:
            m = torch.cat([m, torch.zeros(m.shape[0], t - t0, dtype=torch.bool, device=m.device)], dim=1)
        edit = m[..., None].to(hidden.dtype) * delta_D.to(device=hidden.device, dtype=hidden.dtype)
        state["edited"] += 1
        new = hidden + edit
        if isinstance(output, tuple):
            return (new, *output[1:])
        if isinstance(output, list):
            return [new, *output[1:]]
        return new

    if not 0 <= layer < len(layers_mod):
        raise ValueError(
            f"cannot steer at layer {layer}: the model has {len(layers_mod)} blocks (0-{len(layers_mod) - 1})"
        )
    handle = layers_mod[layer].register_forward_hook(hook)
    try:
        yield state
    finally:
        handle.remove()
