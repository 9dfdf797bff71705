"""SAE training throughput: tokens/s of the whole streamed training job vs the plain forward producing them,
and the share of time in the model vs the SAE step. Tiny demo models on CPU by default (``--d-model`` grows
them); the last line is ``key=value``.

    .venv/bin/python benchmarks/sae_training.py [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from repshift.config import ModelSpec
from repshift.demo.models import build_demo_llm
from repshift.models.adapter import load_adapter
from repshift.sae import train as sae_train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--layer", type=int, default=3)
    args = ap.parse_args()
    n_rows, tokens = (64, 128 * 20) if args.quick else (256, 128 * 200)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_demo_llm(
            Path(tmp) / "llm", seed=0, num_hidden_layers=4 if args.layer < 4 else args.layer + 1
        )
        spec = ModelSpec(name="bench", family="causal-lm", source="local", path=str(path), num_layers=4)
        adapter = load_adapter(spec, location=str(path), dtype="float32", device="auto")
        rows = pd.DataFrame(
            {
                "modality": "text",
                "text": [f"a photo of thing number {i} on a table near a window" for i in range(n_rows)],
            }
        )
        src = sae_train.model_batches(
            adapter, rows, args.layer, image_dir=None, batch_size=16, max_tokens=64, seed=0, kinds=["caption"]
        )
        # plain forward: the tokens the stream produces, without the SAE
        t0, n = time.perf_counter(), 0
        while n < tokens:
            by_kind, _ = next(src)
            n += int(by_kind["caption"].shape[0])
        t_forward = time.perf_counter() - t0
        spec_t = sae_train.TrainSpec(
            architecture="standard", expansion=8, tokens=tokens, batch_size=128, lr=1e-3, buffer_tokens=512,
            norm_batches=2, token_mix={"caption": 1.0},
        )  # fmt: skip
        t0 = time.perf_counter()
        sae_train.fit_sae(
            sae_train.mixed_stream(src, spec_t, chunk=128), spec_t, d_in=adapter.d_model, layer=args.layer,
            model_name="bench", device=str(adapter.device),
        )  # fmt: skip
        t_train = time.perf_counter() - t0
    tok_total = tokens + spec_t.norm_batches * spec_t.batch_size
    fwd_rate = n / t_forward
    train_rate = tok_total / t_train
    model_share = min(1.0, (tok_total / fwd_rate) / t_train)
    print(f"device {adapter.device}, torch threads {torch.get_num_threads()}")
    print(
        f"forward_tokens_per_s={fwd_rate:.0f} train_tokens_per_s={train_rate:.0f} "
        f"ratio={train_rate / fwd_rate:.3f} model_share={model_share:.3f} sae_share={1 - model_share:.3f}"
    )


if __name__ == "__main__":
    main()
