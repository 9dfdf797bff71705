"""What a user would write or use instead of repshift's extractor, for ``benchmarks/extract.py``.

Every peer reads the same token ids in length-sorted batches of the same size, keeps the output of every
requested decoder block and pools it in numpy exactly as repshift pools text rows (mean over text positions, BOS
and pads excluded, and the last text position), so that the peers' pooled means can be checked against the
ones repshift wrote to HDF5. None of them labels positions or writes a file: repshift does both inside its timing.

* :func:`hf_batched` (``trimmed=False``): the full ``Gemma2ForCausalLM`` with ``output_hidden_states=True``
  (LM head included, every hidden state kept), the loop most researchers write;
* :func:`hf_batched` (``trimmed=True``): the same through ``model.model`` (no LM head);
* :func:`nnsight_extract`: nnsight tracing the same HF model, saving every requested block's output;
* :func:`tlens_extract`: TransformerLens ``run_with_cache`` with a ``names_filter`` on ``hook_resid_post``, on a
  ``HookedTransformer`` built offline from the same config and state dict (:func:`build_hooked_transformer`).

Layer L is the output of block L throughout. ``hidden_states[L + 1]`` is that output except for the last block,
whose entry has the final norm applied: the plain HF peers are compared with repshift on blocks 0..n-2 only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import numpy as np
import torch

PAD = 0


def length_sorted_batches(ids: Sequence[Sequence[int]], batch_size: int) -> list[np.ndarray]:
    """Row indices of each batch, longest sequences first (what repshift and a careful user both do)."""
    order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
    return [np.asarray(order[s : s + batch_size]) for s in range(0, len(order), batch_size)]


def right_padded(ids: Sequence[Sequence[int]], rows: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids_BT, attention_mask_BT) of the given rows, right-padded with the pad id."""
    lengths = [len(ids[i]) for i in rows]
    x_BT = torch.full((len(rows), max(lengths)), PAD, dtype=torch.long)
    mask_BT = torch.zeros_like(x_BT)
    for b, i in enumerate(rows):
        x_BT[b, : lengths[b]] = torch.tensor(ids[i])
        mask_BT[b, : lengths[b]] = 1
    return x_BT.to(device), mask_BT.to(device)


class NumpyPool:
    """Per-layer pooled vectors filled batch by batch in numpy: ``mean`` (text positions) and ``last``."""

    def __init__(self, n: int, d: int, layers: Sequence[int]):
        self.mean = {layer: np.zeros((n, d), np.float32) for layer in layers}
        self.last = {layer: np.zeros((n, d), np.float32) for layer in layers}

    def add(self, layer: int, rows: np.ndarray, hidden_BTD: torch.Tensor, mask_BT: torch.Tensor) -> None:
        h_BTD = hidden_BTD.float().cpu().numpy()
        text_BT = mask_BT.cpu().numpy().astype(np.float32)
        text_BT[:, 0] = 0.0  # BOS
        n_B = text_BT.sum(1)
        self.mean[layer][rows] = (h_BTD * text_BT[..., None]).sum(1) / np.maximum(n_B, 1)[:, None]
        last_B = mask_BT.sum(1).cpu().numpy() - 1
        self.last[layer][rows] = h_BTD[np.arange(len(rows)), last_B]


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def hf_batched(model, ids, layers, batch_size: int, *, trimmed: bool) -> NumpyPool:
    """``output_hidden_states=True`` on length-sorted batches; ``trimmed``: ``model.model`` (no LM head)."""
    device = next(model.parameters()).device
    pool = NumpyPool(len(ids), model.config.hidden_size, layers)
    net = model.model if trimmed else model
    for rows in length_sorted_batches(ids, batch_size):
        x_BT, mask_BT = right_padded(ids, rows, device)
        with torch.inference_mode():
            out = net(input_ids=x_BT, attention_mask=mask_BT, output_hidden_states=True)
        for layer in layers:
            pool.add(layer, rows, out.hidden_states[layer + 1], mask_BT)
        del out
    _sync(device)
    return pool


def nnsight_extract(model, ids, layers, batch_size: int) -> NumpyPool:
    """nnsight tracing the HF model (LM head included, as ``LanguageModel`` runs it), saving every block's output."""
    NNsight = importlib.import_module("nnsight").NNsight

    device = next(model.parameters()).device
    traced = NNsight(model)
    blocks = traced.model.layers
    pool = NumpyPool(len(ids), model.config.hidden_size, layers)
    for rows in length_sorted_batches(ids, batch_size):
        x_BT, mask_BT = right_padded(ids, rows, device)
        saved = []
        with torch.inference_mode():
            with traced.trace(x_BT, attention_mask=mask_BT):
                for layer in layers:  # in execution order, as nnsight requires
                    saved.append(blocks[layer].output.save())
        for layer, out in zip(layers, saved, strict=True):
            hidden = out[0] if isinstance(out, (tuple, list)) else out
            pool.add(layer, rows, hidden, mask_BT)
    _sync(device)
    return pool


def build_hooked_transformer(hf_model):
    """A TransformerLens ``HookedTransformer`` with the HF Gemma-2 model's config and weights, built offline.

    The config is TransformerLens' own Gemma-2 recipe (``convert_hf_model_config``'s gemma-2 branch) filled from
    the HF config object, so no hub call is made; the weights go through TransformerLens' Gemma converter.
    """
    tlens = importlib.import_module("transformer_lens")
    HookedTransformer, HookedTransformerConfig = tlens.HookedTransformer, tlens.HookedTransformerConfig
    convert_gemma_weights = importlib.import_module(
        "transformer_lens.pretrained.weight_conversions.gemma"
    ).convert_gemma_weights

    c = hf_model.config
    n = c.num_hidden_layers
    cfg = HookedTransformerConfig(
        d_model=c.hidden_size,
        d_head=c.head_dim,
        n_heads=c.num_attention_heads,
        d_mlp=c.intermediate_size,
        n_layers=n,
        n_ctx=c.max_position_embeddings,
        d_vocab=c.vocab_size,
        act_fn="gelu_pytorch_tanh",
        normalization_type="RMS",
        eps=c.rms_norm_eps,
        positional_embedding_type="rotary",
        rotary_dim=c.head_dim,
        rotary_base=getattr(c, "rope_theta", None) or c.rope_parameters["rope_theta"],
        n_key_value_heads=c.num_key_value_heads,
        use_attn_scale=True,
        attn_scale=c.query_pre_attn_scalar**0.5,
        attn_scores_soft_cap=c.attn_logit_softcapping,
        output_logits_soft_cap=c.final_logit_softcapping,
        use_normalization_before_and_after=True,
        gated_mlp=True,
        final_rms=True,
        window_size=c.sliding_window,
        use_local_attn=True,
        attn_types=["local", "global"] * (n // 2) + ["local"] * (n % 2),  # HF makes even blocks sliding
        original_architecture="Gemma2ForCausalLM",
        default_prepend_bos=False,
        dtype=hf_model.dtype,
        device=str(next(hf_model.parameters()).device),
    )
    tl = HookedTransformer(cfg, move_to_device=True)
    state = convert_gemma_weights(hf_model, cfg)
    tl.load_and_process_state_dict(
        state, fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False
    )
    return tl.eval()


def tlens_extract(tl, ids, layers, batch_size: int) -> NumpyPool:
    """``run_with_cache`` with a ``names_filter`` on the requested blocks' ``hook_resid_post``."""
    device = tl.cfg.device
    wanted = {f"blocks.{layer}.hook_resid_post" for layer in layers}
    keep: Callable[[str], bool] = wanted.__contains__
    pool = NumpyPool(len(ids), tl.cfg.d_model, layers)
    for rows in length_sorted_batches(ids, batch_size):
        x_BT, mask_BT = right_padded(ids, rows, device)
        with torch.inference_mode():
            _, cache = tl.run_with_cache(x_BT, attention_mask=mask_BT, names_filter=keep)
        for layer in layers:
            pool.add(layer, rows, cache[f"blocks.{layer}.hook_resid_post"], mask_BT)
        del cache
    _sync(device)
    return pool


# ------------------------------------------------------------------------------------------ harness
PEER_LABELS = {
    "hf": "HF batched (full model, output_hidden_states, numpy pooling)",
    "hf-trimmed": "HF batched, trimmed (model.model, no LM head)",
    "nnsight": "nnsight trace, every block's output saved",
    "tlens": "TransformerLens run_with_cache(names_filter=hook_resid_post)",
}


def make_peers(model, names: Sequence[str]) -> tuple[dict[str, Callable], dict[str, str]]:
    """The runnable peers ``{name: fn(ids, layers, batch_size) -> NumpyPool}`` and ``{name: why skipped}``."""
    runnable, skipped = {}, {}
    for name in names:
        try:
            if name == "hf":
                runnable[name] = lambda ids, layers, bs: hf_batched(model, ids, layers, bs, trimmed=False)
            elif name == "hf-trimmed":
                runnable[name] = lambda ids, layers, bs: hf_batched(model, ids, layers, bs, trimmed=True)
            elif name == "nnsight":
                importlib.import_module("nnsight")

                runnable[name] = lambda ids, layers, bs: nnsight_extract(model, ids, layers, bs)
            elif name == "tlens":
                tl = build_hooked_transformer(model)
                runnable[name] = lambda ids, layers, bs, tl=tl: tlens_extract(tl, ids, layers, bs)
            else:
                raise ValueError(f"unknown peer {name!r}: choose from {sorted(PEER_LABELS)}")
        except ImportError as e:
            skipped[name] = f"not installed ({e}); install the 'bench' extra: pip install -e '.[bench]'"
        except (RuntimeError, TypeError, KeyError, AttributeError) as e:
            skipped[name] = f"could not be built: {type(e).__name__}: {e}"
    return runnable, skipped


def _rss(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k == key:
                return int(v.split()[0]) * 1024
    return 0


def measured(fn: Callable, device) -> tuple[float, int, object]:
    """(wall seconds, peak memory above the start in bytes, fn's result) of ``fn()``.

    CPU: peak RSS (VmHWM, reset through ``/proc/self/clear_refs`` after ``malloc_trim``) minus RSS before; CUDA:
    ``torch.cuda.max_memory_allocated`` minus the memory allocated before. Both count what the call itself holds
    at its high-water mark (the model and earlier results are in the baseline).
    """
    import ctypes
    import gc
    import time

    gc.collect()
    gpu = torch.device(device).type == "cuda"
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        base = _rss("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    t0 = time.perf_counter()
    res = fn()
    _sync(device)
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if gpu else _rss("VmHWM")
    return wall, max(peak - base, 0), res


def check_same(pool: NumpyPool, repshift_mean: dict[int, np.ndarray], layers: Sequence[int]) -> float:
    """Max over layers of max |peer - repshift| / max |repshift| on the pooled means."""
    worst = 0.0
    for layer in layers:
        ref = repshift_mean[layer].astype(np.float64)
        worst = max(worst, float(np.abs(pool.mean[layer] - ref).max() / max(np.abs(ref).max(), 1e-30)))
    return worst


def report(
    *, n, n_layers, need_flops, mm_ref, best, peak_mem, peer_out, repshift_mean, tol, dtype_name
) -> dict[str, dict]:
    """Print the side-by-side table; return ``{peer: {speed, mem, err, same}}`` (ratios are repshift's gain)."""
    mib = 2.0**-20
    med = {k: float(np.median(v)) for k, v in peak_mem.items()}
    rep_rate = n / best["sweep"]
    print(
        f"\nall-layer sweep against what a user would write or use ({n} prompts, {n_layers} blocks, {dtype_name}; "
        "best time of the interleaved rounds; peak memory above the start of the call, median of the rounds; "
        "ratios are repshift's gain: speed = repshift examples/s / peer's, memory = peer's peak / repshift's)"
    )
    print(
        "| procedure | best s | examples/s | GFLOP/s | share of matmul | peak MiB | repshift speed-up | "
        "repshift memory gain | same pooled means |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| repshift (pooling, position labels, HDF5 incl.) | {best['sweep']:.2f} | {rep_rate:.1f} | "
        f"{need_flops / best['sweep'] / 1e9:.1f} | {need_flops / best['sweep'] / 1e9 / mm_ref:.0%} | "
        f"{med['repshift'] * mib:.0f} | 1 | 1 | - |"
    )
    vs = {}
    for name, pool in peer_out.items():
        s = best[f"peer_{name}"]
        gf = need_flops / s / 1e9
        # hidden_states[-1] carries the final norm: the HF loops are compared on blocks 0..n-2
        layers = range(n_layers - 1) if name.startswith("hf") else range(n_layers)
        err = check_same(pool, repshift_mean, layers)
        vs[name] = {
            "speed": rep_rate / (n / s),
            "mem": med[name] / max(med["repshift"], 1.0),
            "err": err,
            "same": err <= tol,
        }
        print(
            f"| {PEER_LABELS[name]} | {s:.2f} | {n / s:.1f} | {gf:.1f} | {gf / mm_ref:.0%} | "
            f"{med[name] * mib:.0f} | {vs[name]['speed']:.2f}x | {vs[name]['mem']:.1f}x | "
            f"{'yes' if vs[name]['same'] else 'NO'} ({err:.1e}, blocks 0..{layers[-1]}) |"
        )
    print(
        f"(same pooled means: max |peer - repshift| / max |repshift| over the blocks named, repshift's float16 "
        f"store, tol {tol:g}; peak memory of every round, MiB: "
        + "; ".join(f"{k} {', '.join(f'{x * mib:.0f}' for x in v)}" for k, v in peak_mem.items())
        + ")"
    )
    return vs


def targets(vs: dict[str, dict]) -> dict[str, bool]:
    """The targets against the peers that ran (a skipped peer sets no target)."""
    out = {}
    if "hf-trimmed" in vs:
        out[">= HF trimmed speed"] = vs["hf-trimmed"]["speed"] >= 1.0
    if "hf" in vs:
        out[">= 1.5x HF speed"] = vs["hf"]["speed"] >= 1.5
    hf = [k for k in ("hf", "hf-trimmed") if k in vs]
    if hf:
        out["lower peak memory than " + " and ".join(hf)] = all(vs[k]["mem"] > 1.0 for k in hf)
    if vs:
        out["peers give the same pooled means"] = all(v["same"] for v in vs.values())
    return out
