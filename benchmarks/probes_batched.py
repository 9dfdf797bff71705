"""Benchmark: the batched logistic solver (repshift.probes.batched) against scikit-learn, side by side in one run.

Measured, as CPU time on one core (BLAS and torch single-threaded, as the probe jobs run):

* the permutation null of one fold-run: 100 label permutations of the training rows of outer fold 0 of
  ``benchmarks/probes.py``'s synthetic features (2,000 x 2,304, 3 classes: 1,600 training rows), standardised by
  the fold's scaler, at the C that inner CV chose for the real labels (``permutation_c: fixed``).
  scikit-learn fits ``--sk-perms`` of them one by one (scaled to 100); the batched solver fits all 100 at once;
* one real-label task (``fit_probe_pipeline``: 3 inner folds x 5 C + refit, scikit-learn), which is unchanged;
* the CIFAR-100 SAE-feature classifier's shape: 16,384 features, 100 classes, 800 training rows (train fraction
  0.1), sparse non-negative synthetic codes (about 5% active, global RMS scaling): a few L-BFGS iterations of
  one scikit-learn fit and of the batched solver on the 10 problems of one task (3 inner folds x 3 C + refit at
  one C, row weights over one X), per iteration, to project the analysis.

Projections (8 cores, this machine's per-core speed): (a) the probe stage with 3 repeats x 5 folds x 3 seeds
and 100 permutations per fold-run: per (layer, task) unit 45 real tasks + 15 batched nulls, 260 units; (b) the
CIFAR-100 analysis (3 layers x 7 feature sets x 5 fractions x 3 seeds = 315 tasks of 10 problems, rows ~
fraction, iterations taken from the real-size fits below).

    PYTHONPATH=src .venv/bin/python benchmarks/probes_batched.py      # ~3-5 min on a busy 2-core machine

Last line: ``null_sklearn_s=... null_batched_s=... null_speedup=... unit_core_s=... stage_min_8cores=...
stage_target_met=... cifar_iter_speedup=... cifar_cpu_h_8cores=... cifar_target_met_cpu=...``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probes import CONFIG_SETTINGS, synthetic  # noqa: E402

from repshift.probes import cv as probes_cv  # noqa: E402
from repshift.probes.batched import fit_logistic_batched  # noqa: E402

UNITS, CORES, PERMS, FOLD_RUNS, TASKS_PER_UNIT = 260, 8, 100, 15, 45
CIFAR_TASKS, CIFAR_PROBLEMS, CIFAR_MEAN_FRACTION, CIFAR_POOL = 315, 10, 0.3, 8000


def cpu(f):
    t0 = time.process_time()
    out = f()
    return out, time.process_time() - t0


def null_fold_run(n_sk: int):
    x, y, folds, groups = synthetic()
    tr = folds != 0
    settings = probes_cv.ProbeSettings.from_dict({**CONFIG_SETTINGS, "seeds": [0], "n_jobs": 1})
    (pipe, info), real_s = cpu(
        lambda: probes_cv.fit_probe_pipeline(x[tr], y[tr], settings=settings, seed=0, groups_N=groups[tr])
    )
    C = info["C"]
    X = pipe.named_steps["scaler"].transform(x[tr]).astype(np.float32)
    rng = np.random.default_rng([0, 0, 0, 3])
    perms = np.stack([rng.permutation(y[tr]) for _ in range(PERMS)], axis=1)
    with threadpool_limits(limits=1, user_api="blas"):
        sk, sk_s = cpu(
            lambda: [LogisticRegression(C=C, max_iter=2000).fit(X, perms[:, i]) for i in range(n_sk)]
        )
    batch, b_s = cpu(lambda: fit_logistic_batched(X, perms, C, max_iter=2000, threads=1))
    agree = np.mean([np.mean(m.predict(X) == batch.model(i).predict(X)) for i, m in enumerate(sk)])
    dproba = max(np.abs(m.predict_proba(X) - batch.predict_proba(X)[:, i]).max() for i, m in enumerate(sk))
    return dict(
        C=C,
        real_task_s=real_s,
        sk_s=sk_s * PERMS / n_sk,
        batched_s=b_s,
        sk_iter=np.mean([m.n_iter_[0] for m in sk]),
        b_iter=batch.n_iter_B.mean(),
        agree=agree,
        dproba=dproba,
        n=X.shape[0],
    )


def cifar_like(n: int, d: int = 16384, k: int = 100, density: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = sparse.random(n, d, density=density, random_state=seed, format="csr", dtype=np.float32)
    X.data = rng.exponential(1.0, X.data.size).astype(np.float32)
    X = X + sparse.csr_matrix((np.full(n, 3.0, np.float32), (np.arange(n), y * 7)), shape=(n, d))
    X = X * (1.0 / np.sqrt(np.mean(np.square(X.data))))  # global scaling
    return X.tocsr(), y


def cifar_iterations(n: int, iters: int):
    """scikit-learn's seconds per L-BFGS iteration (sparse X), the batched solver's per iteration per problem
    (10 problems over one X) and its fixed cost per task (row-space QR), from fits of 2 and 2 + iters iterations."""
    X, y = cifar_like(n)
    with threadpool_limits(limits=1, user_api="blas"):
        sk, sk_s = cpu(lambda: LogisticRegression(C=0.1, max_iter=iters).fit(X, y))
    weights = np.ones((n, CIFAR_PROBLEMS))
    inner = np.arange(n) % 3
    for j in range(9):
        weights[inner == j % 3, j] = 0  # 3 inner folds x 3 C, then the refit on all rows
    C = np.array([0.01, 0.1, 1.0] * 3 + [0.1])
    Xd = X.toarray()
    times = []
    for m in (2, 2 + iters):
        _, t = cpu(
            lambda m=m: fit_logistic_batched(Xd, y, C, weights=weights, max_iter=m, tol=1e-12, threads=1)
        )
        times.append(t)
    per_iter = (times[1] - times[0]) / iters
    return sk_s / sk.n_iter_[0], per_iter / CIFAR_PROBLEMS, times[0] - 2 * per_iter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sk-perms", type=int, default=10, help="permutations scikit-learn fits (scaled to 100)")
    ap.add_argument("--cifar-iters", type=int, default=5, help="L-BFGS iterations timed at the CIFAR shape")
    ap.add_argument("--cifar-fit-iters", type=float, default=300.0, help="assumed iterations per CIFAR fit")
    args = ap.parse_args()

    r = null_fold_run(args.sk_perms)
    speed = r["sk_s"] / r["batched_s"]
    real_unit = TASKS_PER_UNIT * r["real_task_s"]
    unit_sk = real_unit + FOLD_RUNS * r["sk_s"]
    unit_b = real_unit + FOLD_RUNS * r["batched_s"]
    stage_sk, stage_b = (UNITS * u / CORES / 60 for u in (unit_sk, unit_b))
    print(
        f"# null of one fold-run: {r['n']} training rows x 2304 dims, 3 classes, C = {r['C']:g}, {PERMS} perms"
    )
    print("\n| quantity | scikit-learn, one by one | batched | ratio |")
    print("|---|---|---|---|")
    print(
        f"| 100 permutations, one fold-run (core-s) | {r['sk_s']:.1f} | {r['batched_s']:.1f} | {speed:.2f}x |"
    )
    print(f"| L-BFGS iterations per fit (mean) | {r['sk_iter']:.1f} | {r['b_iter']:.1f} | |")
    print(
        f"| agreement on training rows: predictions / max abs Δproba | | {r['agree']:.4f} / {r['dproba']:.1e} | |"
    )
    print(f"| one real-label task (inner CV + refit, scikit-learn) | {r['real_task_s']:.2f} | (same) | |")
    print(
        f"| unit: 45 real tasks + 15 nulls (core-s) | {unit_sk:.0f} | {unit_b:.0f} | {unit_sk / unit_b:.2f}x |"
    )
    print(f"| (a) 260 units on {CORES} cores (min; target < 30) | {stage_sk:.0f} | {stage_b:.0f} | |")

    n_c = int(CIFAR_MEAN_FRACTION * CIFAR_POOL)
    sk_it, b_it, fixed = cifar_iterations(n_c, args.cifar_iters)
    fits = CIFAR_TASKS * CIFAR_PROBLEMS
    cifar_sk_h = fits * args.cifar_fit_iters * sk_it / CORES / 3600
    cifar_b_h = (fits * args.cifar_fit_iters * b_it + CIFAR_TASKS * fixed) / CORES / 3600
    print(f"\n# CIFAR-100 shape: {n_c} rows (mean fraction) x 16384 latents, 100 classes, 5% active")
    print(f"| s per L-BFGS iteration per problem | {sk_it:.3f} | {b_it:.3f} | {sk_it / b_it:.2f}x |")
    print(f"| fixed cost per task (row-space QR, float64) | | {fixed:.1f} s | |")
    print(
        f"| (b) {fits} fits x {args.cifar_fit_iters:.0f} iterations on {CORES} cores (h; target < 1) | "
        f"{cifar_sk_h:.1f} | {cifar_b_h:.1f} | |"
    )
    met_a, met_b = stage_b < 30, cifar_b_h < 1
    print(
        f"null_sklearn_s={r['sk_s']:.1f} null_batched_s={r['batched_s']:.1f} null_speedup={speed:.2f} "
        f"unit_core_s={unit_b:.0f} stage_min_8cores={stage_b:.0f} stage_target_met={str(met_a).lower()} "
        f"cifar_iter_speedup={sk_it / b_it:.2f} cifar_cpu_h_8cores={cifar_b_h:.1f} "
        f"cifar_target_met_cpu={str(met_b).lower()}"
    )


if __name__ == "__main__":
    main()
