"""Benchmark: the probe stage at the real experiment's size, projected to an 8-core machine.

Size: 2,000 examples x 2,304 dims, 26 layers x 10 tasks = 260 (layer, task) units, each one
:func:`repshift.probes.suite.run_probe_suite` with the real config's settings (c_grid [0.001, 0.01, 0.1, 1, 10],
inner_folds 3, seeds [0, 1, 2], control true: a logistic probe and a shuffled-label control, each 5 outer folds x
3 seeds, each choosing C by a grouped inner CV). Running all 260 here would take hours, so one unit is measured:

* features: synthetic pooled vectors (3 classes, low-rank correlated structure + class signal + noise, tuned to
  a logistic-probe accuracy of about 0.85, like the real within-model probes), written to an HDF5 file in repshift's layout
  (:func:`repshift.formats.activations_h5.write_index` + :class:`repshift.formats.activations_h5.ActivationWriter`, float16) and read back with
  :func:`repshift.formats.activations_h5.read_activations` — the I/O a train_probe job does per model and layer;
* fitting: ``run_probe_suite`` on one unit with ``seeds=[0]`` (all 5 folds, logistic + control) on one core
  (``n_jobs=1``, BLAS single-threaded inside each fit as in repshift), timed as this process's CPU time, i.e.
  core-seconds, which other jobs on a shared machine barely disturb (wall time is printed too); a seed changes only the
  inner-CV shuffle and the control's permutation, so the full unit is 3x that. ``--quick`` fits one outer fold of
  each kind with :func:`repshift.probes.cv.fit_probe_pipeline` (what each of the unit's 30 (seed, fold, kind) tasks
  runs) and scales by 15 per kind.

Projection: 260 units x (fit + read) core-seconds / 8 cores (260 independent jobs keep 8 cores busy; the
Snakemake rule runs 2-thread jobs, 4 at a time). It assumes this machine's per-core speed. Also printed: the same
per-unit cost for config.yaml as it stands (one suite per training (model, modality) and layer: train_probe fits
each probe once and scores it for cross-model and cross-modal transfer), and a before/after of the fits on float64
features (as before) vs float32 (``repshift.probes.cv.FEATURE_DTYPE``), measured in the same run.

    .venv/bin/python benchmarks/probes.py            # ~40 s on 2 cores
    .venv/bin/python benchmarks/probes.py --quick    # ~15 s

The last line is ``unit_core_s=... projected_min_8cores=... fit_share=... io_share=... float32_speedup=...
real_config_min=... target_met=...``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from repshift.formats import activations_h5
from repshift.probes import cv as probes_cv
from repshift.probes import suite as probes_suite

N, D, K = 2000, 2304, 3
LAYERS, TASKS, CORES = 26, 10, 8
TARGET_MIN = 30.0
CONFIG_SETTINGS = dict(c_grid=[0.001, 0.01, 0.1, 1.0, 10.0], inner_folds=3, seeds=[0, 1, 2], control=True)


REAL_CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"


def _training_rows(dataset: dict) -> int:
    """Rows one probe trains on for a dataset of the config (per modality for paired datasets)."""
    if dataset["modality"] == "attribute":
        return int(dataset.get("n_base", N)) * len(dataset.get("factors", [0.5, 1.5]))
    n_classes = len(dataset.get("classes", [])) or 1
    return int(dataset.get("n_per_class", N)) * n_classes


def real_config_suites(path: Path = REAL_CONFIG) -> tuple[float, float]:
    """Suites (one per training model x modality, per layer) the real config's train_probe jobs run, in units of
    the benchmark's N-row suite (fit cost ~ rows: an 800-row attribute task counts 800 / N), and the learning
    curve's extra cost as a fraction of those suites (estimated: fit cost ~ rows, logistic half only)."""
    import yaml

    from repshift import config as rcfg

    cfg = yaml.safe_load(path.read_text())
    settings = cfg["probes"].get("settings", {})
    suites = curve = 0.0
    for name, task in cfg["probes"]["tasks"].items():
        modality = cfg["datasets"][task["dataset"]]["modality"]
        weight = min(1.0, _training_rows(cfg["datasets"][task["dataset"]]) / N)
        trained = set()
        for m in [
            *task["models"],
            *(a for a, _ in task.get("cross_model", [])),
            *task.get("cross_modal", []),
        ]:
            spec = rcfg.model_spec(cfg, m)
            if task.get("target", "label") == "modality":
                trained.add((m, "text+image"))
                continue
            if spec.reads_text and modality in ("text", "paired"):
                trained.add((m, "text"))
            if (spec.is_vlm or not spec.reads_text) and modality in ("image", "paired", "attribute"):
                trained.add((m, "image"))
        layers = rcfg.probe_layers(cfg, name)
        at = [x for x in layers if x in settings.get("curve_layers", layers)]
        suites += weight * len(trained) * len(layers)
        curve += weight * len(trained) * len(at) * sum(settings.get("train_fractions", [])) * 0.5
    return suites, curve / max(suites, 1)


def synthetic(seed: int = 0, n: int = N, d: int = D, k: int = K, signal: float = 0.015):
    """Pooled-vector stand-ins: rank-64 correlated structure, a class signal in a 16-dim subspace, noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    rng.shuffle(y)
    z = rng.standard_normal((n, 64)) @ rng.standard_normal((64, d))
    means = rng.standard_normal((k, 16)) @ rng.standard_normal((16, d))
    x = 0.3 * z + signal * means[y] + rng.standard_normal((n, d))
    # folds stratified by label (5), one row per base image (group), as build_dataset stores them
    folds = np.empty(n, dtype=np.int64)
    for c in range(k):
        idx = np.flatnonzero(y == c)
        folds[idx] = np.arange(idx.size) % 5
    return x.astype(np.float32), y, folds, np.arange(n, dtype=np.int64)


def write_layer(path: Path, x, y, folds, groups) -> None:
    """One layer's activation file in repshift's layout (pooled vectors only, float16)."""
    n, d = x.shape
    manifest = pd.DataFrame(
        {
            "example_id": [f"ex{i}" for i in range(n)],
            "modality": "text",
            "label": y,
            "fold": folds,
            "group": groups,
        }
    )
    with h5py.File(path, "w") as f:
        activations_h5.write_index(f, manifest, {"model": "bench", "layer": 0, "d_model": d})
        w = activations_h5.ActivationWriter(f, n_examples=n, d_model=d, store_dtype="float16", tokens=False)
        ones = np.ones(n, dtype=np.int32)
        rows = np.arange(n)
        for s in range(0, n, 16):  # as extraction writes it: batch by batch
            b = rows[s : s + 16]
            pooled = {name: x[b] for name in activations_h5.POOLINGS}
            w.write_batch(b, pooled, ones[b] * 10, ones[b] * 0)
        w.finish()


def read_layer(path: Path, pooling: str = "mean"):
    """What train_probe reads per model and layer: index, labels, folds, groups and one pooled matrix."""
    acts = activations_h5.read_activations(path)
    rows = np.flatnonzero(acts.modality == "text")
    return acts.pooled(pooling, rows), acts.label[rows], acts.fold[rows], acts.group[rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one outer fold per kind (fit_probe_pipeline) x 15")
    ap.add_argument("--io-reps", type=int, default=5, help="timed reads of the layer file (best kept)")
    args = ap.parse_args()

    x, y, folds, groups = synthetic()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "layer-0.h5"
        t0 = time.perf_counter()
        write_layer(path, x, y, folds, groups)
        write_s = time.perf_counter() - t0
        size = path.stat().st_size
        read_s = float("inf")
        for _ in range(args.io_reps):
            t0 = time.perf_counter()
            X, yy, ff, gg = read_layer(path)
            read_s = min(read_s, time.perf_counter() - t0)  # wall: reading is I/O, not CPU
    assert X.shape == (N, D) and np.array_equal(yy, y) and np.array_equal(ff, folds)

    base = probes_cv.ProbeSettings.from_dict({**CONFIG_SETTINGS, "n_jobs": 1})
    n_seeds = len(base.seeds)
    n_folds = len(np.unique(ff))
    print(
        f"# {N} examples x {D} dims, {K} classes, {n_folds} folds; settings {base.to_dict()}; "
        f"{'quick: one outer fold per kind' if args.quick else 'one unit with seeds=[0], n_jobs=1'}"
    )

    def one_task_each(features) -> dict[str, float]:
        """Seconds of fit_probe_pipeline on outer fold 0's training rows, logistic and control."""
        train = ff != 0
        labels = {"logreg": yy[train], "control": np.random.default_rng(0).permutation(yy[train])}
        out = {}
        for kind, lab in labels.items():
            t0 = time.process_time()
            probes_cv.fit_probe_pipeline(features[train], lab, settings=base, seed=0, groups_N=gg[train])
            out[kind] = time.process_time() - t0
        return out

    acc = float("nan")
    if args.quick:
        per_kind = one_task_each(X.astype(probes_cv.FEATURE_DTYPE))
        unit_fit_s = sum(per_kind.values()) * n_folds * n_seeds
        measured = (
            f"one task per kind: logistic {per_kind['logreg']:.2f} s, control {per_kind['control']:.2f} s"
        )
    else:
        one_seed = probes_cv.ProbeSettings.from_dict({**CONFIG_SETTINGS, "seeds": [0], "n_jobs": 1})
        t0, c0 = time.perf_counter(), time.process_time()
        rows = probes_suite.run_probe_suite(X, yy, ff, settings=one_seed, groups_N=gg)
        suite_s, suite_wall = time.process_time() - c0, time.perf_counter() - t0
        unit_fit_s = suite_s * n_seeds
        acc_rows = rows[(rows.metric == "accuracy")]
        acc = acc_rows[acc_rows.probe == "logreg"]["value"].mean()
        ctrl = acc_rows[acc_rows.probe == "control"]["value"].mean()
        measured = (
            f"run_probe_suite, seeds=[0]: {suite_s:.1f} CPU s ({suite_wall:.1f} s wall; logistic accuracy {acc:.3f}, "
            f"control {ctrl:.3f}, majority {acc_rows[acc_rows.probe == 'majority']['value'].mean():.3f})"
        )
    # before/after in the same run: the fits on float64 features (what repshift did before) vs float32 (now,
    # probes_cv.FEATURE_DTYPE), one task per kind
    t32 = one_task_each(X.astype(probes_cv.FEATURE_DTYPE))
    t64 = one_task_each(X.astype(np.float64))
    speed32 = sum(t64.values()) / sum(t32.values())

    unit_io_s = read_s  # one layer file read per unit (train_probe reads one file per model it probes)
    unit_s = unit_fit_s + unit_io_s
    units = LAYERS * TASKS
    projected_min = units * unit_s / CORES / 60
    fit_share = unit_fit_s / unit_s
    io_share = unit_io_s / unit_s
    met = projected_min < TARGET_MIN
    print(f"measured: {measured}")
    print("\n| quantity | value |")
    print("|---|---|")
    print(
        f"| layer file ({N}x{D} pooled x 4 poolings, float16) | {size / 2**20:.1f} MiB, written in {write_s:.2f} s |"
    )
    print(f"| read one layer (index + one pooled matrix), best of {args.io_reps} | {read_s * 1e3:.1f} ms |")
    print(f"| fitting per unit (3 seeds x {n_folds} folds x logistic + control) | {unit_fit_s:.1f} core-s |")
    print(f"| per unit, fitting + I/O | {unit_s:.1f} core-s (fitting {fit_share:.2%}, I/O {io_share:.2%}) |")
    print(f"| {units} units on {CORES} cores | {projected_min:.1f} min (target < {TARGET_MIN:.0f}) |")
    print(f"| float32 vs float64 fits (one task per kind) | {speed32:.2f}x faster |")
    # A train_probe job fits each (model, modality) probe once and scores it in every space it transfers to
    # (cross-model, cross-modal), plus one final fit on all rows per (model, modality) (~1.25x the rows of one of
    # a suite's 2 x folds x seeds tasks). For a task shaped like config.yaml's `categories` (within gemma text,
    # paligemma text, paligemma image; cross-model and cross-modal reuse those fits) that is 3 suites + 3 final fits.
    n_real, curve_extra = real_config_suites()
    real_min = n_real * unit_s * (1 + curve_extra) / CORES / 60
    print(
        f"\nconfig.yaml as it stands: {n_real:.0f} {N}-row suite equivalents over all train_probe jobs (each "
        f"(model, modality) probe fit "
        f"once), learning curves ~+{curve_extra:.0%} (estimated): ~{real_min:.0f} min on {CORES} cores"
    )
    finals = 1.25 / (2 * n_folds * n_seeds)
    per_job, per_job_before = 3 * (1 + finals), 6 + 3 * finals
    print(
        f"\nnote: a train_probe job for a task shaped like config.yaml's `categories` runs ~{per_job:.1f} suites "
        f"(was ~{per_job_before:.1f} when cross-model and cross-modal refit their probes): "
        f"{projected_min * per_job:.0f} min for {units} such jobs on {CORES} cores"
    )
    print(
        f"before/after, one task per kind: float64 features {sum(t64.values()):.2f} s, float32 "
        f"{sum(t32.values()):.2f} s: {speed32:.2f}x ({projected_min * speed32:.1f} min projected in float64)"
    )
    if not met:
        print("the projection misses the target: lbfgs fits dominate (I/O is negligible)")
    print(f"\ntarget: < {TARGET_MIN:.0f} min on {CORES} cores: {'met' if met else 'MISSED'}")
    print(
        f"unit_core_s={unit_s:.1f} projected_min_8cores={projected_min:.1f} fit_share={fit_share:.4f} "
        f"io_share={io_share:.4f} float32_speedup={speed32:.2f} real_config_min={real_min:.1f} "
        f"target_met={str(met).lower()}"
    )


if __name__ == "__main__":
    main()
