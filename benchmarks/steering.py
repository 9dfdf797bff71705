"""Steering speed on the demo LLM: edited vs plain forwards/s and rollout tokens/s, measured in one run.

    PYTHONPATH=src python benchmarks/steering.py [--device cpu] [--rounds 5] [--repeats 4]

Plain and edited calls alternate within each round and the best time of each is kept (on a shared machine a single
timing can be off several-fold). The edit is the steering hook at the output of block ``layers // 2`` on every text
position of a batch of 16 x 64 tokens; rollouts generate exactly 16 tokens per row greedily (EOS ignored) with only
the prefill edited.
Last line: key=value pairs (edit_overhead = edited / plain best time - 1; target < 0.05).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch


def _best(fns: dict, rounds: int, repeats: int) -> dict[str, float]:
    """Best mean seconds per call of each function, the functions alternating within every round."""
    for fn in fns.values():
        fn()  # warm-up
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / repeats)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=4, help="calls per timing (forwards; rollouts use half)")
    ap.add_argument("--layers", type=int, default=6)
    args = ap.parse_args()
    from repshift.config import ModelSpec
    from repshift.demo.models import build_demo_llm
    from repshift.models.adapter import load_adapter
    from repshift.steering.intervene import position_mask, steer
    from repshift.steering.measures import model_forward
    from repshift.steering.rollouts import greedy_rollout

    with tempfile.TemporaryDirectory() as tmp:
        path = build_demo_llm(Path(tmp) / "llm", seed=0, num_hidden_layers=args.layers)
        spec = ModelSpec(
            name="bench", family="causal-lm", source="local", path=str(path), num_layers=args.layers
        )
        adapter = load_adapter(spec, device=args.device)
        text = "a small orange cat sleeps on a warm windowsill in the afternoon sun " * 4
        batch = adapter.text_batch([adapter.text_ids(text, 64)[0]] * 16)
        mask = position_mask(batch.kinds_BT, "text")
        delta = torch.randn(adapter.d_model, generator=torch.Generator().manual_seed(0))
        layer = args.layers // 2
        # a random-weight model stops at EOS after a few tokens, and an edit changes when: decode exactly n_new
        # tokens either way, or the edited rollout's extra tokens would read as edit overhead
        adapter.model.generation_config.eos_token_id = None

        def edited():
            with steer(adapter.layers, layer, delta, mask):
                model_forward(adapter, batch)

        fwd = _best(
            {"plain": lambda: model_forward(adapter, batch), "edited": edited}, args.rounds, args.repeats
        )
        n_new = 16
        kw = dict(mask_BT=mask, max_new_tokens=n_new)
        for edit in (dict(layer=None, delta_D=None), dict(layer=layer, delta_D=delta)):
            lengths = {len(ids) for ids in greedy_rollout(adapter, batch, **edit, **kw)}
            assert lengths == {n_new}, f"rollouts of {lengths} tokens, expected {n_new}"
        ro = _best(
            {
                "plain": lambda: greedy_rollout(adapter, batch, layer=None, delta_D=None, **kw),
                "edited": lambda: greedy_rollout(adapter, batch, layer=layer, delta_D=delta, **kw),
            },
            args.rounds,
            max(1, args.repeats // 2),
        )
    tokens = n_new * 16
    load = os.getloadavg()[0]
    print(
        f"plain_forwards_per_s={1 / fwd['plain']:.2f} edited_forwards_per_s={1 / fwd['edited']:.2f} "
        f"edit_overhead={fwd['edited'] / fwd['plain'] - 1:.4f} "
        f"rollout_tokens_per_s_plain={tokens / ro['plain']:.1f} rollout_tokens_per_s_edited={tokens / ro['edited']:.1f} "
        f"rollout_overhead={ro['edited'] / ro['plain'] - 1:.4f} device={args.device} "
        f"threads={torch.get_num_threads()} loadavg_1min={load:.2f}"
    )


if __name__ == "__main__":
    main()
