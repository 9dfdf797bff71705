"""Benchmark: repshift's activation extractor against the original notebooks' procedure, side by side.

Both procedures run in this one process on the same random-weight Gemma-2 model (default: d=512, 16 blocks,
vocab 32k, 256 prompts of 8-64 tokens including BOS):

(a) original: one example at a time, right-padded to 64 tokens, a separate full forward (LM head included,
    ``output_hidden_states=True``, every hidden state copied out) per requested layer;
(b) repshift: :func:`repshift.models.extract.extract_dataset` through a :class:`repshift.models.adapter.Adapter` built on the
    same model (length-sorted batches, one forward per batch for all layers, stopped after the deepest
    requested block, pooled vectors and token-level rows streamed to HDF5).

It checks that both give the same activations, then prints examples/s, the speed-up for an all-layer sweep and
for one middle layer, the achieved GFLOP/s of the forward work actually needed (non-pad tokens, blocks up to the
deepest requested one, causal attention) against torch.matmul throughput measured in the same run, and the peak
memory of an extraction of 10x the examples against 1x (subprocesses; peak RSS reset after setup).

The original procedure costs the same for every example (all are padded to 64 tokens), so it is timed on a
subset (``--orig-sweep`` / ``--orig-middle`` examples) and its examples/s applies to the whole set. Timings run in
interleaved rounds (matmul reference, repshift sweep, original sweep, repshift middle, original middle, forward
only) and the best of each is kept, so that other work on a shared machine disturbs the ratios less; the load
average is printed at the start and end and per round.

    .venv/bin/python benchmarks/extract.py            # ~3.5 minutes on an idle 2-core machine
    .venv/bin/python benchmarks/extract.py --quick    # ~1.5 minutes: 128 examples, 2 rounds, noisier
    .venv/bin/python benchmarks/extract.py --gpu-2b   # Gemma-2-2B-sized model in bf16 on CUDA

``--gpu-2b`` uses Gemma-2-2B's shapes (d=2304, 26 blocks, vocab 256k, random weights) in bfloat16 on CUDA, 1024
prompts, batch size 64, pooled vectors only (``--tokens`` adds token-level rows, which then time the disk: 4.6 KB
per token per layer), and targets 35% of the bf16 matmul throughput measured in the same run.

Beside the original, the all-layer sweep is timed against what a user would write or use today (see
``benchmarks/peers.py``: HF batched with and without the LM head, nnsight, TransformerLens), interleaved in the
same rounds, with peak memory per call and the pooled means checked against repshift's.

The last line is ``speedup_sweep=... speedup_middle=... mfu=... mem_ratio=... vs_hf=... vs_hf_trimmed=...
vs_nnsight=... vs_tlens=...`` (``vs_*``: repshift examples/s over the peer's; a skipped peer has no pair).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from peers import make_peers, measured
from peers import report as report_peers
from peers import targets as peer_targets  # benchmarks/ is on sys.path when run as a script

from repshift.config import ModelSpec
from repshift.models.adapter import Adapter
from repshift.models.extract import extract_dataset, run_capture

PAD, EOS, BOS, UNK = 0, 1, 2, 3
PAD_TO = 64  # the original notebooks padded every example to 64 tokens

PRESETS = {
    # sized to take seconds on a 2-core CPU
    "small": dict(
        vocab_size=32_000,
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=16,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=64,
    ),
    # Gemma-2-2B's shapes (config.json of google/gemma-2-2b)
    "2b": dict(
        vocab_size=256_000,
        hidden_size=2304,
        intermediate_size=9216,
        num_hidden_layers=26,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
    ),
}


# ------------------------------------------------------------------------------------------------- setup
def build_model(preset: str, device: torch.device, dtype: torch.dtype, seed: int = 0):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    p = PRESETS[preset]
    cfg = Gemma2Config(
        **p,
        query_pre_attn_scalar=p["head_dim"],
        max_position_embeddings=1024,
        sliding_window=4096,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=BOS,
        tie_word_embeddings=True,
        attn_implementation="eager",  # Gemma-2 needs eager (softcapping), as repshift.models.adapter.load_adapter uses
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = Gemma2ForCausalLM._from_config(cfg, dtype=dtype)
    return model.eval()


def build_tokenizer(vocab_size: int):
    """A word-level fast tokenizer whose ids we control: the text ``"w5 w17"`` is ids ``[5, 17]``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD, "<eos>": EOS, "<bos>": BOS, "<unk>": UNK}
    vocab.update({f"w{i}": i for i in range(4, vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def make_manifest(n: int, vocab_size: int, seed: int = 0, min_len: int = 8, max_len: int = 64):
    """n text rows whose token ids (BOS included) are 8-64 long, uniformly; returns (manifest, ids per row)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, size=n)
    ids = [[BOS] + rng.integers(4, vocab_size, size=int(t) - 1).tolist() for t in lengths]
    manifest = pd.DataFrame(
        {
            "example_id": [f"ex{i}" for i in range(n)],
            "modality": "text",
            "text": [" ".join(f"w{t}" for t in x[1:]) for x in ids],
            "label": np.arange(n) % 3,
            "fold": np.arange(n) % 5,
            "group": np.arange(n),
        }
    )
    return manifest, ids


def make_adapter(model, tokenizer, device) -> Adapter:
    spec = ModelSpec(
        name="bench-gemma2", family="causal-lm", source="local", num_layers=model.config.num_hidden_layers
    )
    return Adapter(spec, model, tokenizer, None, device)


# ----------------------------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(m: int, k: int, n: int, device, dtype, seconds: float = 0.4, trials: int = 3) -> float:
    """Best-of-``trials`` torch.matmul throughput of an (m, k) @ (k, n) product, GFLOP/s."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    out = torch.empty(m, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b, out=out)
    sync(device)
    flops = 2.0 * m * k * n
    best = 0.0
    for _ in range(trials):
        reps, t0 = 0, time.perf_counter()
        while True:
            torch.matmul(a, b, out=out)
            reps += 1
            if reps % 4 == 0:
                sync(device)
                if time.perf_counter() - t0 > seconds:
                    break
        best = max(best, flops * reps / (time.perf_counter() - t0) / 1e9)
    return best


def block_flops(cfg, lengths, n_blocks: int, *, full_square: bool = False) -> float:
    """Forward FLOPs of ``n_blocks`` decoder blocks on sequences of the given lengths.

    2 * (weights in matmuls) per token, plus attention scores and values: 2 * 2 * H * head_dim per (query, key)
    pair; a causal model needs ``t (t + 1) / 2`` pairs for a length-t sequence (``full_square``: ``t^2``, what an
    eager implementation multiplies). Norms, RoPE, softmax and activations are not counted.
    """
    d, ff = cfg.hidden_size, cfg.intermediate_size
    h, hkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    weights = d * h * hd + 2 * d * hkv * hd + h * hd * d + 3 * d * ff
    lengths = np.asarray(lengths, dtype=np.float64)
    pairs = (lengths**2).sum() if full_square else (lengths * (lengths + 1) / 2).sum()
    return float(n_blocks * (2.0 * weights * lengths.sum() + 4.0 * h * hd * pairs))


def lm_head_flops(cfg, n_tokens: float) -> float:
    return 2.0 * cfg.hidden_size * cfg.vocab_size * n_tokens


# --------------------------------------------------------------------------------- original procedure
def original_procedure(model, ids_list, layers, device) -> tuple[list[dict[int, torch.Tensor]], float]:
    """The notebooks' loop: per example, per requested layer, one padded full forward with all hidden states.

    Returns, per example, ``{layer: hidden_states[layer + 1][0, :len(ids)]}`` and the wall time in seconds.
    """
    out = []
    sync(device)
    t0 = time.perf_counter()
    for ids in ids_list:
        x = torch.full((1, PAD_TO), PAD, dtype=torch.long)
        mask = torch.zeros((1, PAD_TO), dtype=torch.long)
        x[0, : len(ids)] = torch.tensor(ids)
        mask[0, : len(ids)] = 1
        x, mask = x.to(device), mask.to(device)
        per_layer = {}
        for layer in layers:
            with torch.no_grad():
                res = model(input_ids=x, attention_mask=mask, output_hidden_states=True)
            hidden = [h.to("cpu", copy=True) for h in res.hidden_states]
            per_layer[layer] = hidden[layer + 1][0, : len(ids)]
        out.append(per_layer)
    sync(device)
    return out, time.perf_counter() - t0


# --------------------------------------------------------------------------------------------- checks
def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def compare(model, orig, ids_list, rows, path_of, n_layers, last_norm) -> float:
    """Max relative error between the original's hidden states and repshift's token-level rows (float32 store).

    The original's ``hidden_states[-1]`` has the final norm applied (repshift reads the last block before it, as
    Gemma Scope does), so the last block is compared after applying the same norm to repshift's rows.
    """
    worst = 0.0
    layers = sorted(orig[0])
    for layer in layers:
        with h5py.File(path_of(layer), "r") as f:
            start, length = f["tokens/start"][...], f["tokens/length"][...]
            acts = f["tokens/acts"]
            for k, (row, ids) in enumerate(zip(rows, ids_list, strict=True)):
                assert length[row] == len(ids), (length[row], len(ids))
                ours = torch.from_numpy(acts[start[row] : start[row] + length[row]].astype(np.float32))
                if layer == n_layers - 1:
                    with torch.no_grad():
                        ours = last_norm(ours.to(next(model.parameters()).device, model.dtype)).float().cpu()
                worst = max(worst, rel_err(ours, orig[k][layer].float()))
    return worst


def pooled_check(orig, rows, path, layer) -> float:
    """Relative error of repshift's stored (float16) mean-over-text pool against the original's hidden states."""
    with h5py.File(path, "r") as f:
        pooled = torch.from_numpy(f["pooled/mean"][...].astype(np.float32))
    worst = 0.0
    for k, row in enumerate(rows):
        ref = orig[k][layer][1:].float().mean(0)  # text positions: everything after BOS (no pads kept)
        worst = max(worst, rel_err(pooled[row], ref))
    return worst


# --------------------------------------------------------------------------------------------- memory
def _proc_status(*keys: str) -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in keys:
                out[k] = int(v.split()[0]) * 1024
    return out


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def mem_child(args) -> None:
    """Run one extraction in this (fresh) process and print its memory high-water marks as JSON."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    model = build_model(args.preset, device, dtype)
    tokenizer = build_tokenizer(model.config.vocab_size)
    adapter = make_adapter(model, tokenizer, device)
    manifest, _ = make_manifest(args.mem_child, model.config.vocab_size, seed=1)
    layers = [int(x) for x in args.mem_layers.split(",")]
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        # warm-up: lazily allocated state (thread pools, h5py, the allocator's arenas) is not extraction state
        warm = {layer: Path(tmp) / f"warm-{layer}.h5" for layer in layers}
        extract_dataset(
            adapter, manifest.iloc[:32], warm, tokens=True, batch_size=args.batch_size, progress=False
        )
        for p in warm.values():
            p.unlink()
        del manifest
        gc.collect()
        manifest, _ = make_manifest(args.mem_child, model.config.vocab_size, seed=1)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        _malloc_trim()  # hand freed heap back to the OS: both runs start from their live memory
        base = _proc_status("VmRSS")["VmRSS"]
        with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM (peak RSS) to the current RSS
            f.write("5")
        paths = {layer: Path(tmp) / f"layer-{layer}.h5" for layer in layers}
        t0 = time.perf_counter()
        summary = extract_dataset(
            adapter, manifest, paths, tokens=True, batch_size=args.batch_size, progress=False
        )
        wall = time.perf_counter() - t0
        peak = _proc_status("VmHWM")["VmHWM"]
        disk = sum(p.stat().st_size for p in paths.values())
    res = {
        "n": args.mem_child,
        "base_rss": base,
        "peak_rss": peak,
        "extra": peak - base,
        "wall_s": wall,
        "tokens": sum(summary["n_tokens"].values()),
        "disk_bytes": disk,
    }
    if device.type == "cuda":
        res["gpu_peak"] = torch.cuda.max_memory_allocated()
    print("MEMJSON " + json.dumps(res))


def run_mem(args, n: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--mem-child",
        str(n),
        "--mem-layers",
        args.mem_layers,
        "--preset",
        args.preset,
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
    ]
    if args.tmp:
        cmd += ["--tmp", args.tmp]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{res.stderr[-4000:]}")
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("MEMJSON ")][-1]
    return json.loads(line[len("MEMJSON ") :])


# ----------------------------------------------------------------------------------------------- main
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def timed_extract(adapter, manifest, layers, folder, *, tokens, batch_size, store_dtype="float16"):
    """Wall seconds of extract_dataset (pooled + optional token rows streamed to HDF5) and the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {layer: folder / f"layer-{layer}.h5" for layer in layers}
    sync(adapter.device)
    t0 = time.perf_counter()
    extract_dataset(
        adapter,
        manifest,
        paths,
        tokens=tokens,
        batch_size=batch_size,
        store_dtype=store_dtype,
        progress=False,
    )
    sync(adapter.device)
    return time.perf_counter() - t0, paths


def forward_only(adapter, ids, layers, batch_size) -> float:
    """Seconds for run_capture alone over length-sorted batches (no pooling, no HDF5)."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    batches = [
        adapter.text_batch([ids[i] for i in order[s : s + batch_size]])
        for s in range(0, len(ids), batch_size)
    ]
    sync(adapter.device)
    t0 = time.perf_counter()
    for b in batches:
        run_capture(adapter, b, layers)
    sync(adapter.device)
    return time.perf_counter() - t0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="128 examples, 2 rounds (~1-2 minutes; noisier)")
    ap.add_argument("--gpu-2b", action="store_true", help="Gemma-2-2B-sized random model in bf16 on CUDA")
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None, help="model size (default small)")
    ap.add_argument("--device", default=None, help="default cpu (cuda with --gpu-2b)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default float32 (bfloat16 on GPU)")
    ap.add_argument("--n-examples", type=int, default=None, help="prompts (default 256; 1024 with --gpu-2b)")
    ap.add_argument(
        "--batch-size", type=int, default=None, help="repshift batch size (default 16, the config's)"
    )
    ap.add_argument(
        "--rounds", type=int, default=None, help="interleaved timing rounds, best kept (default 3)"
    )
    ap.add_argument("--orig-sweep", type=int, default=None, help="examples timed for the original sweep (4)")
    ap.add_argument(
        "--orig-middle", type=int, default=None, help="examples timed for the original middle layer (24)"
    )
    tok = ap.add_mutually_exclusive_group()
    tok.add_argument("--tokens", dest="tokens", action="store_true", default=None, help="token-level rows on")
    tok.add_argument("--no-tokens", dest="tokens", action="store_false", help="pooled vectors only")
    ap.add_argument(
        "--peers",
        default="hf,hf-trimmed,nnsight,tlens",
        help="comma-separated peers timed beside repshift's sweep: hf, hf-trimmed, nnsight, tlens ('' for none)",
    )
    ap.add_argument("--skip-mem", action="store_true", help="skip the 1x / 10x memory subprocesses")
    ap.add_argument("--mem-layers", default="0,1", help="layers extracted in the memory runs (default 0,1)")
    ap.add_argument("--mem-scale", type=int, default=10)
    ap.add_argument("--mem-reps", type=int, default=None, help="runs per size, medians compared (default 3)")
    ap.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)"
    )
    ap.add_argument("--tmp", default=None, help="folder for the HDF5 files (default: system temp)")
    ap.add_argument("--mem-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.gpu_2b:
        if not torch.cuda.is_available():
            sys.exit("--gpu-2b needs CUDA, and none is available here")
        args.preset = args.preset or "2b"
        args.device = args.device or "cuda"
        args.dtype = args.dtype or "bfloat16"
    args.preset = args.preset or "small"
    args.device = args.device or "cpu"
    args.dtype = args.dtype or "float32"
    gpu = args.device.startswith("cuda")
    if args.batch_size is None:
        args.batch_size = 64 if gpu else 16
    if args.tokens is None:
        # On a GPU the forward outruns any disk: token-level rows (4.6 KB per token per layer at d=2304) would
        # time the file system, not the extractor. The CPU run keeps them on (the heavier, SAE-stage case).
        args.tokens = not gpu
    args.n_examples = args.n_examples or (1024 if gpu else 128 if args.quick else 256)
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.mem_reps = args.mem_reps or (2 if args.quick else 3)
    args.orig_sweep = args.orig_sweep or (2 if args.quick else 4)
    args.orig_middle = args.orig_middle or (8 if args.quick else 24)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    if args.mem_child is not None:
        mem_child(args)
        return
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    gpu = device.type == "cuda"
    n, bs = args.n_examples, args.batch_size

    print(f"# load average at start: {loadavg()}")
    model = build_model(args.preset, device, dtype)
    cfg = model.config
    n_layers = cfg.num_hidden_layers
    middle = n_layers // 2
    all_layers = list(range(n_layers))
    tokenizer = build_tokenizer(cfg.vocab_size)
    adapter = make_adapter(model, tokenizer, device)
    manifest, ids = make_manifest(n, cfg.vocab_size)
    assert all(adapter.text_ids(t, PAD_TO)[0] == x for t, x in zip(manifest["text"], ids, strict=True))
    lengths = np.array([len(x) for x in ids])
    n_params = sum(p.numel() for p in model.parameters())
    where = torch.cuda.get_device_name(device) if gpu else cpu_name()
    print(
        f"# model: Gemma2ForCausalLM, random weights, preset {args.preset} (d={cfg.hidden_size}, {n_layers} blocks, "
        f"vocab {cfg.vocab_size}, {n_params / 1e6:.1f}M params, eager attention), {args.dtype} on {device} "
        f"({where}), {torch.get_num_threads()} torch threads"
    )
    print(
        f"# data: {n} prompts of {lengths.min()}-{lengths.max()} tokens (mean {lengths.mean():.1f}, BOS included); "
        f"repshift batch size {bs}, token-level rows {'on' if args.tokens else 'off'}, float16 store; "
        f"{args.rounds} interleaved rounds, best time of each kept"
    )

    tmp_ctx = tempfile.TemporaryDirectory(dir=args.tmp)
    tmp = Path(tmp_ctx.name)
    # warm-up both paths (thread pools, transformers' lazily installed hooks, the allocator)
    original_procedure(model, ids[:1], [middle], device)
    timed_extract(adapter, manifest.iloc[:32], all_layers, tmp / "warm", tokens=args.tokens, batch_size=bs)

    # reference: torch.matmul of the forward's dominant shape (one batch's tokens x d @ d x 4d)
    ref_shape = (int(bs * lengths.mean()), cfg.hidden_size, cfg.intermediate_size)
    sweep_rows = np.linspace(0, n - 1, args.orig_sweep).round().astype(int).tolist()
    mid_rows = np.linspace(0, n - 1, args.orig_middle).round().astype(int).tolist()
    t = {k: [] for k in ("mm", "sweep", "middle", "fwd", "orig_sweep", "orig_middle")}
    peers, skipped = make_peers(model, [x for x in args.peers.split(",") if x])
    for name, why in skipped.items():
        print(f"# peer {name} skipped: {why}")
    for fn in peers.values():  # warm-up (nnsight's and TransformerLens' first calls set things up)
        fn(ids[:bs], all_layers, bs)
    t.update({f"peer_{name}": [] for name in peers})
    peak_mem = {name: [] for name in ("repshift", *peers)}
    peer_out = {}
    for r in range(args.rounds):
        keep = r == args.rounds - 1  # the last round's outputs are checked
        t["mm"].append(matmul_gflops(*ref_shape, device, dtype))
        _, peak, (s, sweep_paths) = measured(
            lambda r=r: timed_extract(
                adapter, manifest, all_layers, tmp / f"sweep{r}", tokens=args.tokens, batch_size=bs
            ),
            device,
        )
        peak_mem["repshift"].append(peak)
        t["sweep"].append(s)
        for name, fn in peers.items():  # same ids, layers, batch size, dtype, threads; side by side
            s, peak, pooled = measured(lambda fn=fn: fn(ids, all_layers, bs), device)
            t[f"peer_{name}"].append(s)
            peak_mem[name].append(peak)
            peer_out[name] = pooled
        orig_out_sweep, s = original_procedure(model, [ids[i] for i in sweep_rows], all_layers, device)
        t["orig_sweep"].append(s / len(sweep_rows))
        s, middle_paths = timed_extract(
            adapter, manifest, [middle], tmp / f"middle{r}", tokens=args.tokens, batch_size=bs
        )
        t["middle"].append(s)
        orig_out_mid, s = original_procedure(model, [ids[i] for i in mid_rows], [middle], device)
        t["orig_middle"].append(s / len(mid_rows))
        t["fwd"].append(forward_only(adapter, ids, all_layers, bs))
        if not keep:
            for p in (*sweep_paths.values(), *middle_paths.values()):
                p.unlink()
        print(
            f"#   round {r + 1}: matmul {t['mm'][-1]:.0f} GFLOP/s; sweep {t['sweep'][-1]:.2f} s vs original "
            f"{t['orig_sweep'][-1]:.3f} s/example; middle {t['middle'][-1]:.2f} s vs "
            f"{t['orig_middle'][-1]:.4f} s/example; "
            + "".join(f"{k} {t['peer_' + k][-1]:.2f} s; " for k in peers)
            + f"load {loadavg()}"
        )
    t["mm"].append(matmul_gflops(*ref_shape, device, dtype))
    mm_ref = max(t["mm"])
    mm_big = (
        matmul_gflops(4096, 4096, 4096, device, dtype)
        if gpu
        else matmul_gflops(2048, 2048, 2048, device, dtype)
    )
    best = {k: (max(v) if k == "mm" else min(v)) for k, v in t.items()}

    # same activations? the checked rows again with a float32 token-level store, against the original's states
    _, check_paths = timed_extract(
        adapter,
        manifest.iloc[sweep_rows].reset_index(drop=True),
        all_layers,
        tmp / "check",
        tokens=True,
        batch_size=bs,
        store_dtype="float32",
    )
    sweep_ids = [ids[i] for i in sweep_rows]
    err_tok = compare(
        model,
        orig_out_sweep,
        sweep_ids,
        list(range(len(sweep_rows))),
        check_paths.__getitem__,
        n_layers,
        model.model.norm,
    )
    err_mid = pooled_check(orig_out_mid, mid_rows, middle_paths[middle], middle)
    err_sweep = max(pooled_check(orig_out_sweep, sweep_rows, sweep_paths[L], L) for L in all_layers[:-1])
    fp32 = dtype == torch.float32
    tol_tok, tol_pool = (1e-4, 5e-3) if fp32 else (5e-2, 5e-2)
    same = err_tok <= tol_tok and err_mid <= tol_pool and err_sweep <= tol_pool
    print(
        f"\nsame activations: {'yes' if same else 'NO'} — max |diff| / max |ref| on the {len(sweep_rows)} rows "
        f"both ran: token rows {err_tok:.1e} (float32 store, tol {tol_tok:g}; last block compared after the final "
        f"norm, which hidden_states[-1] includes); pooled means {err_sweep:.1e} (sweep), {err_mid:.1e} (middle, "
        f"{len(mid_rows)} rows) (float16 store, tol {tol_pool:g})"
    )

    # speed
    rate = {k: n / best[k] for k in ("sweep", "middle")}
    orig_rate = {"sweep": 1 / best["orig_sweep"], "middle": 1 / best["orig_middle"]}
    speedup_sweep = rate["sweep"] / orig_rate["sweep"]
    speedup_middle = rate["middle"] / orig_rate["middle"]
    need_sweep = block_flops(cfg, lengths, n_layers)
    need_middle = block_flops(cfg, lengths, middle + 1)
    gf = {
        "sweep": need_sweep / best["sweep"] / 1e9,
        "middle": need_middle / best["middle"] / 1e9,
        "fwd": need_sweep / best["fwd"] / 1e9,
    }
    mfu = gf["sweep"] / mm_ref
    orig_fwd = block_flops(cfg, [PAD_TO], n_layers, full_square=True) + lm_head_flops(cfg, PAD_TO)
    orig_gf = n_layers * orig_fwd / best["orig_sweep"] / 1e9
    print("\n| procedure | layers | examples timed | best s/example | examples/s | speed-up |")
    print("|---|---|---|---|---|---|")
    for key, label, n_t in (
        ("sweep", f"all {n_layers}", args.orig_sweep),
        ("middle", str(middle), args.orig_middle),
    ):
        print(f"| original | {label} | {n_t} | {best['orig_' + key]:.4f} | {orig_rate[key]:.3f} | 1 |")
        sp = rate[key] / orig_rate[key]
        print(f"| repshift | {label} | {n} | {best[key] / n:.4f} | {rate[key]:.2f} | {sp:.1f}x |")
    print(
        f"\nforward work needed (non-pad tokens, blocks 0..deepest, causal attention): sweep "
        f"{need_sweep / 1e12:.3f} TFLOP, middle {need_middle / 1e12:.3f} TFLOP; the original computes "
        f"{n * n_layers * orig_fwd / need_sweep:.0f}x the sweep's work and {n * orig_fwd / need_middle:.1f}x the "
        "middle layer's (padded to 64, every block, LM head, one forward per layer)"
    )
    print(
        f"torch.matmul {ref_shape[0]}x{ref_shape[1]} @ {ref_shape[1]}x{ref_shape[2]} {args.dtype}: best "
        f"{mm_ref:.1f} GFLOP/s (rounds: {', '.join(f'{x:.0f}' for x in t['mm'])}); "
        f"{'4096' if gpu else '2048'}^3: {mm_big:.1f} GFLOP/s"
    )
    print("| repshift | GFLOP/s | share of matmul |")
    print("|---|---|---|")
    print(f"| all-layer sweep, end to end (pooling + HDF5 included) | {gf['sweep']:.1f} | {mfu:.0%} |")
    print(f"| middle layer, end to end | {gf['middle']:.1f} | {gf['middle'] / mm_ref:.0%} |")
    print(f"| all-layer sweep, forward only (run_capture) | {gf['fwd']:.1f} | {gf['fwd'] / mm_ref:.0%} |")
    print(
        f"(original: {orig_gf:.1f} GFLOP/s of its own, mostly unneeded, work; pooling + HDF5 take "
        f"{max(0.0, 1 - best['fwd'] / best['sweep']):.0%} of repshift's sweep)"
    )

    repshift_mean = {}
    for layer in all_layers:
        with h5py.File(sweep_paths[layer], "r") as f:
            repshift_mean[layer] = f["pooled/mean"][...].astype(np.float32)
    vs = report_peers(
        n=n,
        n_layers=n_layers,
        need_flops=need_sweep,
        mm_ref=mm_ref,
        best=best,
        peak_mem=peak_mem,
        peer_out=peer_out,
        repshift_mean=repshift_mean,
        tol=tol_pool,
        dtype_name=args.dtype,
    )

    mem_ratio = float("nan")
    if not args.skip_mem:
        # the allocator's state makes one run's extraction peak vary by +-10-15 MiB around a ~70 MiB working set:
        # run each size --mem-reps times and compare the median runs (the upper median of an even count)
        def median_run(n_examples: int) -> tuple[dict, list[float]]:
            runs = sorted((run_mem(args, n_examples) for _ in range(args.mem_reps)), key=lambda r: r["extra"])
            extras = [r["extra"] for r in runs]
            return runs[len(runs) // 2], extras  # the median run (the upper one of two)

        one, one_all = median_run(n)
        ten, ten_all = median_run(args.mem_scale * n)
        mem_ratio = ten["extra"] / max(one["extra"], 1)
        mib = 1 / 2**20
        print(
            f"\nmemory: a fresh subprocess per run, layers {args.mem_layers}, token-level rows on; after model load "
            "and a warm-up extraction, malloc_trim and reset the peak RSS (VmHWM), then extract; extraction peak "
            f"= peak RSS - RSS before; the median of {args.mem_reps} runs per size"
        )
        print(
            "| examples | tokens | RSS before MiB | peak RSS MiB | extraction peak MiB | HDF5 written MiB | s |"
        )
        print("|---|---|---|---|---|---|---|")
        for r in (one, ten):
            print(
                f"| {r['n']} | {r['tokens']} | {r['base_rss'] * mib:.0f} | {r['peak_rss'] * mib:.0f} | "
                f"{r['extra'] * mib:.1f} | {r['disk_bytes'] * mib:.0f} | {r['wall_s']:.1f} |"
            )
        mib_list = lambda xs: ", ".join(f"{x / 2**20:.0f}" for x in xs)  # noqa: E731
        print(
            f"extraction peaks of all runs, MiB: 1x {mib_list(one_all)}; {args.mem_scale}x {mib_list(ten_all)}"
        )
        print(
            f"extraction peak {args.mem_scale}x / 1x: {mem_ratio:.2f}; whole-process peak RSS "
            f"{args.mem_scale}x / 1x: {ten['peak_rss'] / one['peak_rss']:.2f}; growth "
            f"{(ten['extra'] - one['extra']) * mib / ((args.mem_scale - 1) * n) * 1024:.1f} KiB per extra example "
            f"vs {(ten['disk_bytes'] - one['disk_bytes']) * mib / ((args.mem_scale - 1) * n) * 1024:.0f} KiB written"
        )
        if "gpu_peak" in one:
            print(
                f"GPU peak allocated {args.mem_scale}x / 1x: {ten['gpu_peak'] / max(one['gpu_peak'], 1):.2f}"
            )

    mfu_target = 0.35 if gpu else 0.40
    targets = {
        "all-layer sweep >= 20x": speedup_sweep >= 20,
        "middle layer >= 3x": speedup_middle >= 3,
        f"matmul share >= {mfu_target:.0%}": mfu >= mfu_target,
        **({} if args.skip_mem else {"memory 10x <= 1.5 x 1x": mem_ratio <= 1.5}),
        "same activations": same,
        **peer_targets(vs),
    }
    print("\ntargets: " + "; ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    print(f"# load average at end: {loadavg()}")
    tmp_ctx.cleanup()
    print(
        f"speedup_sweep={speedup_sweep:.1f} speedup_middle={speedup_middle:.2f} mfu={mfu:.2f} "
        f"mem_ratio={mem_ratio:.2f} "
        + " ".join(f"vs_{k.replace('-', '_')}={v['speed']:.2f}" for k, v in vs.items())
    )


if __name__ == "__main__":
    main()
