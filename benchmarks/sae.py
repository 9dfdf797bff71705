"""Benchmark: SAE encoding throughput and sparse-code storage, Gemma Scope-sized (d_in 2304, 16k latents).

Builds a sae-lens ``JumpReLUSAE(JumpReLUSAEConfig(d_in=2304, d_sae=16384))`` with random weights and one
threshold chosen so that L0 is about 100 on standard-normal activations, encodes random activations with
:func:`repshift.sae.codes.encode` (the pipeline's call, default batch size), and reports tokens/s and the achieved
GFLOP/s of the encoder matmul against torch.matmul on the same shapes measured in the same run. It then writes the
codes with :func:`repshift.formats.codes_h5.write_codes` (as the encode_sae step does: float32 values, gzip, pooled codes
per example) and reports the bytes per stored token, sparse vs dense (:func:`repshift.formats.codes_h5.storage_bytes_per_token`).

    .venv/bin/python benchmarks/sae.py            # ~75 s on 2 cores (3 interleaved rounds of 8192 tokens)
    .venv/bin/python benchmarks/sae.py --quick    # ~40 s (2 rounds of 4096 tokens)

Then (``benchmarks/fused.py``) fused extract+encode (``extraction.fused_sae``) against the two-step path (extract
token rows to HDF5, then the encode_sae step) on the same model, prompts and SAEs: time and bytes written.

The last line is ``tokens_per_s=... gflops=... mfu=... l0=... bytes_sparse=... bytes_dense=... storage_ratio=...
fused_speedup=... fused_bytes_ratio=... fused_same=...``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import fused as fused_bench  # benchmarks/ is on sys.path when run as a script
import numpy as np
import torch
from extract import loadavg, sync
from extract import matmul_gflops as _matmul_gflops  # benchmarks/ is on sys.path when run as a script
from scipy.stats import norm

from repshift.formats import codes_h5
from repshift.formats.activations_h5 import POSITION_KINDS
from repshift.sae import codes as sae_codes

D_IN, D_SAE, TARGET_L0 = 2304, 16384, 100


def build_sae(
    seed: int = 0,
    d_in: int = D_IN,
    d_sae: int = D_SAE,
    target_l0: float = TARGET_L0,
    hook_name: str = "blocks.12.hook_resid_post",
):
    """A Gemma Scope-shaped JumpReLU SAE with random weights; L0 ~ target_l0 on N(0, I) inputs."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    sae = JumpReLUSAE(
        JumpReLUSAEConfig(
            d_in=d_in,
            d_sae=d_sae,
            apply_b_dec_to_input=False,
            normalize_activations="none",
            metadata=SAEMetadata(hook_name=hook_name),
        )
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # columns of W_enc have unit norm, so each pre-activation of an N(0, I) input is N(0, 1)
        w = torch.randn(d_in, d_sae, generator=g)
        sae.W_enc.copy_(w / w.norm(dim=0, keepdim=True))
        sae.W_dec.copy_(sae.W_enc.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.threshold.fill_(float(norm.isf(target_l0 / d_sae)))
    return sae.eval()


def matmul_gflops(m: int, k: int, n: int, device="cpu") -> float:
    """Best-of-3 torch.matmul throughput (fp32), measured exactly as benchmarks/extract.py does."""
    return _matmul_gflops(m, k, n, torch.device(device), torch.float32, seconds=0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n-tokens", type=int, default=None)
    ap.add_argument(
        "--batch-size", type=int, default=4096, help="repshift.sae.codes.encode batch size (its default)"
    )
    ap.add_argument(
        "--rounds", type=int, default=None, help="interleaved timing rounds, best kept (default 3)"
    )
    ap.add_argument(
        "--tokens-per-example", type=int, default=36, help="for the per-example offsets and pooling"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (the fused comparison then runs in bf16)")
    ap.add_argument("--tmp", default=None, help="folder for the HDF5 files (default: system temp)")
    ap.add_argument("--skip-encode", action="store_true", help="only the fused vs two-step comparison")
    ap.add_argument("--skip-fused", action="store_true", help="only the encode throughput and storage tables")
    ap.add_argument("--fused-examples", type=int, default=None, help="prompts (default 128; --quick 48)")
    ap.add_argument("--fused-preset", default="small", help="benchmarks/extract.py model preset (small | 2b)")
    ap.add_argument("--fused-layers", default="3,7,11,15", help="layers with an SAE (default 3,7,11,15)")
    ap.add_argument("--fused-d-sae", type=int, default=None, help="SAE width (default 8 x d_model)")
    ap.add_argument("--fused-l0", type=float, default=TARGET_L0, help="target mean L0 of the SAEs")
    ap.add_argument("--fused-batch-size", type=int, default=16, help="extraction batch size (the config's)")
    args = ap.parse_args()
    args.fused_examples = args.fused_examples or (48 if args.quick else 128)
    args.rounds = args.rounds or (2 if args.quick else 3)
    torch.set_num_threads(args.threads)
    print(f"# load average at start: {loadavg()}")
    last = {} if args.skip_encode else encode_section(args)
    if not args.skip_fused:
        res = fused_bench.run(args, build_sae, loadavg)
        last.update(
            fused_speedup=f"{res['speedup']:.2f}",
            fused_bytes_ratio=f"{res['bytes_ratio']:.1f}",
            fused_same="yes" if res["same"] else "no",
        )
        targets = {
            "fused >= 1.3x faster end to end": res["speedup"] >= 1.3,
            "fused >= 10x fewer bytes": res["bytes_ratio"] >= 10,
            "same pooled codes": res["same"],
        }
        print("targets: " + "; ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    print(f"# load average at end: {loadavg()}")
    print(" ".join(f"{k}={v}" for k, v in last.items()))


def encode_section(args) -> dict:
    """SAE encode throughput (Gemma Scope-sized) and code storage; returns the last line's pairs."""
    n = args.n_tokens or (4096 if args.quick else 8192)
    rounds = args.rounds
    sae = build_sae().to(args.device)
    rng = np.random.default_rng(0)
    acts = rng.standard_normal((n, D_IN), dtype=np.float32)
    print(
        f"# JumpReLUSAE d_in={D_IN} d_sae={D_SAE}, random weights, threshold {sae.threshold[0].item():.3f}; "
        f"{n} random tokens, batch size {args.batch_size}, {torch.get_num_threads()} threads, {args.device}"
    )
    sae_codes.encode(sae, acts[: min(n, args.batch_size)], batch_size=args.batch_size)  # warm-up

    # interleaved rounds (matmul reference, then the encode), best of each kept: robust to a busy machine
    x = torch.from_numpy(acts[: args.batch_size]).to(args.device)
    mm, enc, raw = [], [], []
    codes = None
    for r in range(rounds):
        mm.append(matmul_gflops(args.batch_size, D_IN, D_SAE, args.device))
        sync(torch.device(args.device))
        t0 = time.perf_counter()
        codes = sae_codes.encode(sae, acts, batch_size=args.batch_size)
        sync(torch.device(args.device))
        enc.append(time.perf_counter() - t0)
        # the same work without the conversion to CSR: what sae-lens' encode alone costs (one batch)
        with torch.inference_mode():
            sync(torch.device(args.device))
            t0 = time.perf_counter()
            sae.encode(x)
            sync(torch.device(args.device))
            raw.append(time.perf_counter() - t0)
        print(
            f"#   round {r + 1}: matmul {mm[-1]:.0f} GFLOP/s, encode {n / enc[-1]:.0f} tokens/s, "
            f"load {loadavg()}"
        )
    mm.append(matmul_gflops(args.batch_size, D_IN, D_SAE, args.device))
    mm_ref, best, raw_batch_s = max(mm), min(enc), min(raw)

    tokens_per_s = n / best
    flops_per_token = 2.0 * D_IN * D_SAE  # the encoder matmul (the decoder is not run by encode)
    gflops = tokens_per_s * flops_per_token / 1e9
    mfu = gflops / mm_ref
    l0 = codes.nnz / codes.n_tokens
    raw_tokens_per_s = x.shape[0] / raw_batch_s
    print("\n| measure | value |")
    print("|---|---|")
    print(
        f"| repshift.sae.codes.encode | {tokens_per_s:,.0f} tokens/s ({best:.2f} s for {n} tokens, best of {rounds}) |"
    )
    print(f"| achieved (encoder matmul FLOPs) | {gflops:.1f} GFLOP/s |")
    print(
        f"| torch.matmul {args.batch_size}x{D_IN} @ {D_IN}x{D_SAE} fp32 | best {mm_ref:.1f} GFLOP/s "
        f"(rounds: {', '.join(f'{v:.0f}' for v in mm)}) |"
    )
    print(f"| share of matmul throughput | {mfu:.0%} |")
    print(
        f"| sae-lens encode alone, one batch | {raw_tokens_per_s:,.0f} tokens/s "
        f"({raw_tokens_per_s * flops_per_token / 1e9 / mm_ref:.0%} of matmul) |"
    )
    print(f"| mean L0 | {l0:.1f} (target ~{TARGET_L0}) |")

    # storage, as the encode_sae step writes it (float32 values, gzip, pooled codes), and variants
    offsets = np.arange(0, n + 1, args.tokens_per_example, dtype=np.int64)
    if offsets[-1] != n:
        offsets = np.append(offsets, n)
    from repshift.sae.encode import pooled_codes

    kinds = np.full(n, POSITION_KINDS["text"], dtype=np.int8)
    pooled = pooled_codes(codes, offsets, kinds, np.array(["text"] * (len(offsets) - 1)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        variants = [
            ("pipeline: float32 values, gzip, pooled", dict(pooled_NF=pooled)),
            ("float32 values, gzip, no pooled", dict()),
            ("float16 values, gzip, no pooled", dict(values_dtype="float16")),
            ("float32 values, uncompressed, no pooled", dict(compression=None)),
        ]
        for name, kw in variants:
            path = Path(tmp) / "codes.h5"
            t0 = time.perf_counter()
            codes_h5.write_codes(path, codes, example_offsets_N1=offsets, attrs={"bench": True}, **kw)
            write_s = time.perf_counter() - t0
            st = codes_h5.storage_bytes_per_token(path)
            rows.append((name, st, write_s))
            path.unlink()
    dense16, dense32 = 2.0 * D_SAE, 4.0 * D_SAE
    print(
        f"\nbytes per stored token (mean L0 {l0:.1f}); dense codes: {dense16:.0f} B float16, {dense32:.0f} B float32"
    )
    print("| layout | file B/token | vs dense float16 | uncompressed CSR B/token | write s |")
    print("|---|---|---|---|---|")
    for name, st, write_s in rows:
        print(
            f"| {name} | {st['file']:.0f} | {st['file_ratio']:.2%} | {st['sparse_raw']:.0f} | {write_s:.2f} |"
        )
    pipeline = rows[0][1]
    print(f"\ntarget: >= 40% of matmul throughput: {'met' if mfu >= 0.40 else 'MISSED'}")
    return dict(
        tokens_per_s=f"{tokens_per_s:.0f}",
        gflops=f"{gflops:.1f}",
        mfu=f"{mfu:.2f}",
        l0=f"{l0:.1f}",
        bytes_sparse=f"{pipeline['file']:.0f}",
        bytes_dense=f"{dense16:.0f}",
        storage_ratio=f"{pipeline['file_ratio']:.4f}",
    )


if __name__ == "__main__":
    main()
