"""Steering speed on the demo LLM: edited vs plain forwards/s and rollout tokens/s, measured in one run.

    PYTHONPATH=src python benchmarks/steering.py [--device cpu] [--repeats 20]

Last line: key=value pairs (edit_overhead = edited / plain time - 1; target < 0.05).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def _time(fn, repeats: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=20)
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
        delta = torch.randn(adapter.d_model)
        layer = args.layers // 2

        def edited():
            with steer(adapter.layers, layer, delta, mask):
                model_forward(adapter, batch)

        plain_s = _time(lambda: model_forward(adapter, batch), args.repeats)
        edited_s = _time(edited, args.repeats)
        n_new = 16
        kw = dict(mask_BT=mask, max_new_tokens=n_new)
        ro_plain = _time(lambda: greedy_rollout(adapter, batch, layer=None, delta_D=None, **kw), 3)
        ro_edit = _time(lambda: greedy_rollout(adapter, batch, layer=layer, delta_D=delta, **kw), 3)
    tokens = n_new * 16
    print(
        f"plain_forwards_per_s={1 / plain_s:.2f} edited_forwards_per_s={1 / edited_s:.2f} "
        f"edit_overhead={edited_s / plain_s - 1:.4f} rollout_tokens_per_s_plain={tokens / ro_plain:.1f} "
        f"rollout_tokens_per_s_edited={tokens / ro_edit:.1f} rollout_overhead={ro_edit / ro_plain - 1:.4f} "
        f"device={args.device}"
    )


if __name__ == "__main__":
    main()
