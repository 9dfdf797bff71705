"""Benchmark: the batched nested-CV engine against scikit-learn, side by side in one run, and the two speed
targets of the probe stage projected to 8 cores.

Measured as this process's CPU time (BLAS and torch single-threaded, as the probe jobs run: core-seconds).

(a) **Probe stage.** One (layer, task) unit at the real experiment's size and the real config's settings:
    ``benchmarks/probes.py``'s synthetic pooled features (2,000 x 2,304, 3 classes, one row per group), 3 outer
    repeats x 5 grouped folds (``repshift.formats.manifest.assign_folds``, as build_dataset stores them),
    c_grid [0.001, 0.01, 0.1, 1, 10], 3 inner folds, seeds [0, 1, 2], 100 permutations (fixed C).

    * batched: the whole unit through ``repshift.probes.suite.run_probe_suite`` (15 fold-runs; per fold-run
      one scaler and one solver basis for the 3 seeds' inner CV, their refits and the 100-permutation null);
    * scikit-learn: fold-run (repeat 0, fold 0) one fit at a time (3 x ``fit_probe_pipeline`` and
      ``--sk-perms`` null fits at the chosen C, scaled to 100), times 15 fold-runs;
    * agreement on that fold-run: C chosen per seed, test-row predictions and probabilities.

    Projection: 260 units (26 layers x 10 tasks) x unit core-seconds / 8 cores (independent jobs).

(b) **CIFAR-100 SAE-feature classification** (``sae_features`` of config.yaml: 16,384 latents, 100 classes,
    7 feature sets x 5 training fractions x 3 seeds at 3 layers = 315 tasks, each an inner CV over 3 C x 3
    inner folds and a refit). Synthetic sparse codes (5% active, exponential values, a class-marking latent,
    global RMS scaling) at each fraction's rows (0.1-0.5 of 8,000): one task per fraction through
    ``repshift.sae.class_features.fit_classifier`` on the batched solver, x 63 (layers x feature sets x
    seeds) / 8 cores. scikit-learn reference: its seconds per L-BFGS iteration on the sparse codes (a fit cut
    at ``--cifar-iters`` iterations) x ``--cifar-fit-iters`` assumed iterations x 10 fits per task.

    PYTHONPATH=src .venv/bin/python benchmarks/probes_batched.py      # ~6-8 min on 2 cores

Last line: ``unit_batched_core_s=... unit_sklearn_core_s=... unit_speedup=... stage_min_8cores=...
stage_target_met=... cifar_h_8cores=... cifar_sklearn_h_8cores=... cifar_target_met_cpu=...``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probes import CONFIG_SETTINGS, synthetic  # noqa: E402

from repshift.formats.manifest import assign_folds, repeat_seed  # noqa: E402
from repshift.probes.batched import torch_threads  # noqa: E402
from repshift.probes.cv import ProbeSettings, fit_probe_pipeline, fit_probe_pipelines_batched  # noqa: E402
from repshift.probes.suite import run_probe_suite  # noqa: E402
from repshift.sae.class_features import fit_classifier  # noqa: E402

UNITS, CORES, PERMS, REPEATS = 260, 8, 100, 3
CIFAR_POOL, CIFAR_FRACTIONS, CIFAR_TASKS_PER_FRACTION = 8000, (0.1, 0.2, 0.3, 0.4, 0.5), 3 * 7 * 3
CIFAR_PROBLEMS = 10  # 3 C x 3 inner folds + the refit


def cpu(f):
    t0 = time.process_time()
    out = f()
    return out, time.process_time() - t0


def unit_data():
    x, y, _, groups = synthetic()
    folds = np.stack([assign_folds(y, groups, n_folds=5, seed=repeat_seed(0, r)) for r in range(REPEATS)])
    return x, y, folds, groups


def probe_unit(n_sk: int) -> dict:
    x, y, folds, groups = unit_data()
    settings = ProbeSettings.from_dict(
        {**CONFIG_SETTINGS, "repeats": REPEATS, "permutations": PERMS, "n_jobs": 1}
    )
    rows, batched_s = cpu(lambda: run_probe_suite(x, y, folds, settings=settings, groups_N=groups))
    n_null = int((rows.probe == "permutation").sum() / rows.metric.nunique())

    tr = folds[0] != 0
    te = ~tr
    ref, ref_s = cpu(
        lambda: [
            fit_probe_pipeline(x[tr], y[tr], settings=settings, seed=s, groups_N=groups[tr])
            for s in settings.seeds
        ]
    )
    C0 = ref[0][1]["C"]
    X_tr = ref[0][0].named_steps["scaler"].transform(x[tr])
    rng = np.random.default_rng([0, 0, 0, 3])
    perms = np.stack([rng.permutation(y[tr]) for _ in range(n_sk)], axis=1)
    with threadpool_limits(limits=1, user_api="blas"):
        _, sk_null_s = cpu(
            lambda: [LogisticRegression(C=C0, max_iter=2000).fit(X_tr, perms[:, i]) for i in range(n_sk)]
        )
    sk_run = ref_s + sk_null_s * PERMS / n_sk
    with torch_threads(1):
        ours, _ = fit_probe_pipelines_batched(
            x[tr], y[tr], settings=settings, seeds=settings.seeds, groups_N=groups[tr]
        )
    our_C = [o[1]["C"] for o in ours]
    agree = np.mean(
        [np.mean(o[0].predict(x[te]) == r[0].predict(x[te])) for o, r in zip(ours, ref, strict=True)]
    )
    dproba = max(
        np.abs(o[0].predict_proba(x[te]) - r[0].predict_proba(x[te])).max()
        for o, r in zip(ours, ref, strict=True)
    )
    return dict(
        batched_s=batched_s,
        sk_unit_s=sk_run * folds.shape[0] * 5,
        sk_run_s=sk_run,
        n_null=n_null,
        C=[r[1]["C"] for r in ref],
        our_C=our_C,
        agree=agree,
        dproba=dproba,
        accuracy=rows.loc[(rows.probe == "logreg") & (rows.metric == "accuracy"), "value"].mean(),
        null_accuracy=rows.loc[(rows.probe == "permutation") & (rows.metric == "accuracy"), "value"].mean(),
    )


def cifar_like(n: int, d: int = 16384, k: int = 100, density: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = sparse.random(n, d, density=density, random_state=seed, format="csr", dtype=np.float32)
    X.data = rng.exponential(1.0, X.data.size).astype(np.float32)
    X = X + sparse.csr_matrix((np.full(n, 3.0, np.float32), (np.arange(n), y * 7)), shape=(n, d))
    return X.tocsr(), y


def cifar(iters: int, fit_iters: float) -> dict:
    settings = ProbeSettings(c_grid=(0.01, 0.1, 1.0), inner_folds=3, seeds=(0,))
    per_fraction = {}
    for f in CIFAR_FRACTIONS:
        X, y = cifar_like(int(f * CIFAR_POOL))
        with torch_threads(1):
            (_, C, n_conv), t = cpu(lambda X=X, y=y: fit_classifier(X, y, settings=settings, seed=0))
        per_fraction[f] = (t, C, n_conv)
        print(
            f"#   fraction {f}: {X.shape[0]} rows, one task {t:.1f} core-s, C = {C:g}, unconverged {n_conv}"
        )
    X, y = cifar_like(int(0.3 * CIFAR_POOL))
    Xs = X * (1.0 / np.sqrt(np.mean(np.square(X.data, dtype=np.float64))))
    with threadpool_limits(limits=1, user_api="blas"):
        sk, sk_s = cpu(lambda: LogisticRegression(C=0.1, max_iter=iters).fit(Xs, y))
    sk_iter = sk_s / sk.n_iter_[0]
    task_s = sum(t for t, _, _ in per_fraction.values())
    return dict(
        per_fraction=per_fraction,
        hours=task_s * CIFAR_TASKS_PER_FRACTION / CORES / 3600,
        sk_hours=sk_iter
        * fit_iters
        * CIFAR_PROBLEMS
        * len(CIFAR_FRACTIONS)
        * CIFAR_TASKS_PER_FRACTION
        / CORES
        / 3600,
        sk_iter=sk_iter,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sk-perms", type=int, default=10, help="null fits scikit-learn makes (scaled to 100)")
    ap.add_argument(
        "--cifar-iters", type=int, default=5, help="iterations of the timed scikit-learn CIFAR fit"
    )
    ap.add_argument(
        "--cifar-fit-iters", type=float, default=300.0, help="assumed scikit-learn iterations per fit"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    u = probe_unit(args.sk_perms)
    stage = UNITS * u["batched_s"] / CORES / 60
    stage_sk = UNITS * u["sk_unit_s"] / CORES / 60
    print(
        "# (a) one (layer, task) unit: 2000 x 2304, 3 classes, 3 repeats x 5 folds, seeds [0, 1, 2], 100 perms"
    )
    print(f"#     accuracy {u['accuracy']:.3f}, null {u['null_accuracy']:.3f} ({u['n_null']} null rows)")
    print("\n| quantity | scikit-learn, one by one | batched engine | ratio |")
    print("|---|---|---|---|")
    print(
        f"| fold-run (0, 0): 3 seeds' nested CV + 100-permutation null (core-s) | {u['sk_run_s']:.1f} | "
        f"{u['batched_s'] / 15:.1f} (unit / 15) | {u['sk_run_s'] * 15 / u['batched_s']:.1f}x |"
    )
    print(
        f"| unit: 15 fold-runs (core-s) | {u['sk_unit_s']:.0f} (projected) | {u['batched_s']:.0f} (measured) | "
        f"{u['sk_unit_s'] / u['batched_s']:.1f}x |"
    )
    print(f"| 260 units on {CORES} cores (min; target < 30) | {stage_sk:.0f} | {stage:.0f} | |")
    print(f"| fold-run (0, 0): C chosen per seed | {u['C']} | {u['our_C']} | |")
    print(
        f"| agreement, fold-run (0, 0): test predictions / max abs Δproba | | "
        f"{u['agree']:.4f} / {u['dproba']:.1e} | |"
    )

    c = cifar(args.cifar_iters, args.cifar_fit_iters)
    print("\n# (b) CIFAR-100 shape: 16384 latents, 100 classes, 5% active; one task per training fraction")
    print(f"| scikit-learn s per L-BFGS iteration (2400 rows, sparse) | {c['sk_iter']:.3f} | | |")
    print(
        f"| 315 tasks on {CORES} cores (h; target < 1) | {c['sk_hours']:.1f} "
        f"({args.cifar_fit_iters:.0f} iterations assumed) | {c['hours']:.2f} | {c['sk_hours'] / c['hours']:.0f}x |"
    )
    met_a, met_b = stage < 30, c["hours"] < 1
    print(
        f"unit_batched_core_s={u['batched_s']:.0f} unit_sklearn_core_s={u['sk_unit_s']:.0f} "
        f"unit_speedup={u['sk_unit_s'] / u['batched_s']:.1f} stage_min_8cores={stage:.0f} "
        f"stage_target_met={str(met_a).lower()} cifar_h_8cores={c['hours']:.2f} "
        f"cifar_sklearn_h_8cores={c['sk_hours']:.1f} cifar_target_met_cpu={str(met_b).lower()}"
    )


if __name__ == "__main__":
    main()
