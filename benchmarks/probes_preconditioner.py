"""Benchmark: the batched solver's preconditioner that follows the fit against one fixed curvature bound, side by
side in one run, on the probe benchmark's data and variants of it.

Each data set goes through ``repshift.probes.cv.fit_probe_pipelines_batched`` exactly as a fold-run of the probe
stage does (real config settings: c_grid [0.001, 0.01, 0.1, 1, 10], 3 inner folds, seeds [0, 1, 2], 100
permutations), on fold-runs 0 and 1 of 5 grouped folds, twice:

* ``fixed``: the previous solver, one preconditioner for the whole fit (the Hessian bound at uniform
  probabilities, scale 0.2; module constants ``_CURVATURE = 0.2``, no refresh);
* ``following``: the solver as shipped (scale ``_CURVATURE`` at the start, recomputed from the fitted
  probabilities at iteration ``_REFRESH_AT``).

Data: ``benchmarks/probes.py``'s synthetic pooled features (2,000 x 2,304, 3 classes), its binary, strong-signal
and d = 512 variants, and an anisotropic stand-in closer to residual-stream activations (power-law spectrum,
five outlier dimensions). Counted: problem-iterations (the sum over all fits of each problem's L-BFGS
iterations: what the GEMMs scale with), the longest problem, unconverged fits, CPU seconds and the C chosen
per seed (both solvers should choose alike).

    PYTHONPATH=src .venv/bin/python benchmarks/probes_preconditioner.py      # ~2 min on 2 cores

Last line: ``<set>_iter_ratio=... ... min_iter_ratio=... unconverged=...`` (fixed / following).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probes import CONFIG_SETTINGS, synthetic  # noqa: E402

from repshift.formats.manifest import assign_folds  # noqa: E402
from repshift.probes import batched  # noqa: E402
from repshift.probes.cv import ProbeSettings, fit_probe_pipelines_batched  # noqa: E402

SHIPPED = (batched._CURVATURE, batched._REFRESH_AT)
SOLVERS = {"fixed": (0.2, 10**9), "following": SHIPPED}


def anisotropic(seed: int = 0, n: int = 2000, d: int = 2304, k: int = 3):
    """Power-law spectrum (singular values ~ j^-0.8), a random rotation, five outlier dimensions x30."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    rng.shuffle(y)
    g = rng.standard_normal((n, d)) * (np.arange(1, d + 1) ** -0.8)
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    x = g @ rotation.T * 10
    x[:, :5] *= 30
    means = rng.standard_normal((k, 16)) @ rng.standard_normal((16, d))
    return (x + 0.02 * means[y]).astype(np.float32), y, None, np.arange(n)


DATA = {
    "three_class": lambda: synthetic(),
    "binary": lambda: synthetic(k=2),
    "strong_signal": lambda: synthetic(signal=0.05),
    "d512": lambda: synthetic(d=512),
    "anisotropic": anisotropic,
}


def run(x, y, groups, folds, settings) -> dict:
    counts = {"problem_iters": 0, "longest": 0, "unconverged": 0}
    fit = batched.fit_logistic_batched

    def counting(*args, **kwargs):
        out = fit(*args, **kwargs)
        counts["problem_iters"] += int(out.n_iter_B.sum())
        counts["longest"] = max(counts["longest"], int(out.n_iter_B.max()))
        counts["unconverged"] += int((~out.converged_B).sum())
        return out

    batched.fit_logistic_batched = counting
    t0, chosen = time.process_time(), []
    try:
        for f in (0, 1):
            tr = folds != f
            perms = np.stack([np.random.default_rng(i).permutation(y[tr]) for i in range(100)], axis=1)
            fits, _ = fit_probe_pipelines_batched(
                x[tr], y[tr], settings=settings, seeds=settings.seeds, groups_N=groups[tr], permutations=perms
            )
            chosen.append([info["C"] for _, info in fits])
    finally:
        batched.fit_logistic_batched = fit
    return {**counts, "cpu_s": time.process_time() - t0, "C": chosen}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    settings = ProbeSettings.from_dict({**CONFIG_SETTINGS, "permutations": 100, "n_jobs": 1})
    print(
        "| data | solver | problem-iterations | longest problem | unconverged | CPU s | C per seed, fold-runs 0 / 1 |"
    )
    print("|---|---|---|---|---|---|---|")
    ratios, unconverged = {}, 0
    with threadpool_limits(limits=1, user_api="blas"):
        for name, make in DATA.items():
            x, y, _, groups = make()
            folds = assign_folds(y, groups, n_folds=5, seed=0)
            res = {}
            for solver, (curvature, refresh_at) in SOLVERS.items():
                batched._CURVATURE, batched._REFRESH_AT = curvature, refresh_at
                try:
                    res[solver] = r = run(x, y, groups, folds, settings)
                finally:
                    batched._CURVATURE, batched._REFRESH_AT = SHIPPED
                unconverged += r["unconverged"]
                print(
                    f"| {name} | {solver} | {r['problem_iters']} | {r['longest']} | {r['unconverged']} | "
                    f"{r['cpu_s']:.1f} | {r['C'][0]} / {r['C'][1]} |",
                    flush=True,
                )
            ratios[name] = res["fixed"]["problem_iters"] / res["following"]["problem_iters"]
    print(
        " ".join(f"{k}_iter_ratio={v:.2f}" for k, v in ratios.items())
        + f" min_iter_ratio={min(ratios.values()):.2f} unconverged={unconverged}"
    )


if __name__ == "__main__":
    main()
