"""Fused extract+encode (``extraction.fused_sae``) against the two-step path, for ``benchmarks/sae.py``.

Both paths run in one process on the same random Gemma-2 model, prompts and SAEs (sae-lens JumpReLU, one per
layer, saved to disk and loaded back as the pipeline does), in interleaved rounds, best time kept:

* two-step: :func:`repshift.models.extract.extract_dataset` with token-level rows (float16 HDF5), then the
  ``encode_sae`` step itself reading those files back (codes, pooled codes, transfer metrics per position kind);
* fused: the same extraction without token rows, its ``token_sink`` a :class:`repshift.sae.encode.FusedEncoder`
  (encode batch by batch, dense rows dropped), then ``FusedEncoder.write`` (the very layout encode_sae writes).

Bytes written: every file both paths leave (activation files, codes files, tables). The pooled codes of both
paths are checked equal (the fused path rounds token rows to the store dtype first, as encode_sae reads them).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch
from extract import build_model, build_tokenizer, make_adapter, make_manifest, sync

from repshift.formats import codes_h5
from repshift.formats.layout import layer_file
from repshift.models.extract import extract_dataset, run_capture
from repshift.sae.encode import FusedEncoder
from repshift.sae.steps import encode_sae


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def calibrated_saes(adapter, ids, layers, d_sae: int, target_l0: float, folder: Path, build_sae) -> dict:
    """One JumpReLU SAE per layer saved under ``folder``; each threshold set so that L0 ~ target_l0 on that
    layer's activations (pre-activations of unit-norm encoder columns have the activations' RMS as scale)."""
    from scipy.stats import norm

    batch = adapter.text_batch(ids[:16])
    captured = run_capture(adapter, batch, layers)
    mask_BT = batch.inputs["attention_mask"].bool().to(adapter.device)
    dirs = {}
    for layer in layers:
        h_BTD = captured[layer].float()
        rms = float(h_BTD[mask_BT][:, :].pow(2).mean().sqrt())
        sae = build_sae(
            seed=layer,
            d_in=adapter.d_model,
            d_sae=d_sae,
            target_l0=target_l0,
            hook_name=f"blocks.{layer}.hook_resid_post",
        )
        with torch.no_grad():
            sae.threshold.fill_(float(norm.isf(target_l0 / d_sae)) * rms)
        dirs[layer] = folder / f"sae-{layer}"
        sae.save_model(str(dirs[layer]))
    return dirs


def two_step(adapter, manifest, layers, sae_dirs, out: Path, *, batch_size: int, device: str) -> None:
    acts = out / "acts"
    acts.mkdir(parents=True)
    paths = {layer: layer_file(acts, layer) for layer in layers}
    extract_dataset(adapter, manifest, paths, tokens=True, batch_size=batch_size, progress=False)
    encode_sae(
        input={"acts": str(acts)},
        output={"codes": str(out / "codes")},
        params={
            "sae_dirs": {str(k): str(v) for k, v in sae_dirs.items()},
            "layers": layers,
            "device": device,
        },
        wildcards={"sae": "bench", "dataset": "bench"},
    )


def fused(adapter, manifest, layers, sae_dirs, out: Path, *, batch_size: int, device: str) -> None:
    acts = out / "acts"
    acts.mkdir(parents=True)
    paths = {layer: layer_file(acts, layer) for layer in layers}
    sink = FusedEncoder(
        {"sae": "bench", "sae_dirs": sae_dirs, "dataset": "bench"},
        d_model=adapter.d_model,
        device=device,
        store_dtype="float16",
        model=adapter.spec.name,
        rows=manifest,
    )
    extract_dataset(
        adapter, manifest, paths, tokens=False, batch_size=batch_size, token_sink=sink, progress=False
    )
    sink.write(acts)  # the extraction folder, as extract_activations writes it


def run(args, build_sae, loadavg) -> dict:
    """Print the fused-vs-two-step table and return the ratios for the last line."""
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_model(args.fused_preset, device, dtype)
    adapter = make_adapter(model, build_tokenizer(model.config.vocab_size), device)
    manifest, ids = make_manifest(args.fused_examples, model.config.vocab_size)
    n_layers = model.config.num_hidden_layers
    layers = [int(x) for x in args.fused_layers.split(",")] if args.fused_layers else [n_layers // 2]
    d_sae = args.fused_d_sae or 8 * adapter.d_model
    import tempfile

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        sae_dirs = calibrated_saes(adapter, ids, layers, d_sae, args.fused_l0, tmp, build_sae)
        paths = {"two-step": two_step, "fused": fused}
        kw = dict(batch_size=args.fused_batch_size, device=str(device))
        for name, fn in paths.items():  # warm-up
            fn(adapter, manifest.iloc[:16], layers, sae_dirs, tmp / f"warm-{name}", **kw)
        secs = {name: [] for name in paths}
        written = {}
        for r in range(args.rounds):
            for name, fn in paths.items():
                out = tmp / f"{name}-{r}"
                shutil.rmtree(tmp / f"{name}-{r - 1}", ignore_errors=True)
                sync(device)
                t0 = time.perf_counter()
                fn(adapter, manifest, layers, sae_dirs, out, **kw)
                sync(device)
                secs[name].append(time.perf_counter() - t0)
                written[name] = folder_bytes(out)
            print(
                f"#   fused round {r + 1}: two-step {secs['two-step'][-1]:.2f} s, fused {secs['fused'][-1]:.2f} s; "
                f"load {loadavg()}"
            )
        last = args.rounds - 1
        err, l0 = 0.0, []
        for layer in layers:
            two, meta2 = codes_h5.read_codes(tmp / f"two-step-{last}" / "codes" / f"layer-{layer}.codes.h5")
            fus, meta1 = codes_h5.read_codes(tmp / f"fused-{last}" / "acts" / f"layer-{layer}.codes.h5")
            ref = meta2["pooled_NF"]
            err = max(err, float(np.abs(meta1["pooled_NF"] - ref).max() / max(np.abs(ref).max(), 1e-30)))
            l0.append(two.nnz / two.n_tokens)
    best = {k: min(v) for k, v in secs.items()}
    speedup = best["two-step"] / best["fused"]
    bytes_ratio = written["two-step"] / max(written["fused"], 1)
    same = err <= 1e-3
    n_tok = int(sum(len(x) for x in ids))
    print(
        f"\nfused extract+encode vs two-step ({args.fused_examples} prompts, {n_tok} tokens, {args.fused_preset} "
        f"model, layers {layers}, JumpReLU d_sae={d_sae}, mean L0 {np.mean(l0):.0f}, float16 activation store, "
        f"best of {args.rounds} interleaved rounds)"
    )
    print("| path | best s | tokens/s | bytes written | bytes/token/layer |")
    print("|---|---|---|---|---|")
    for name in paths:
        print(
            f"| {name} | {best[name]:.2f} | {n_tok / best[name]:,.0f} | {written[name]:,} | "
            f"{written[name] / n_tok / len(layers):,.0f} |"
        )
    print(
        f"fused: {speedup:.2f}x faster end to end, {bytes_ratio:.1f}x fewer bytes; same pooled codes: "
        f"{'yes' if same else 'NO'} (max rel diff {err:.1e})"
    )
    return {"speedup": speedup, "bytes_ratio": bytes_ratio, "same": same}
