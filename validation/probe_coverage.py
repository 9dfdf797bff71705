"""Coverage of the probe intervals: does the nominal 95% interval contain the procedure's true accuracy?

Data with known truth: two balanced Gaussian classes in ``--dims`` dimensions whose means differ by ``--delta``
along one axis (each row its own group). The probe procedure's true accuracy at a size (the expected accuracy of
:func:`repshift.probes.cv.fit_probe_pipeline` fit on a training set of ``n * (folds - 1) / folds`` rows: what
cross-validation estimates) is measured on a large independent pool, averaged over fresh training sets. Then each
simulation draws ``n`` rows, stores ``repeats`` grouped stratified fold assignments exactly as a manifest does
(:func:`repshift.formats.manifest.assign_folds`, :func:`repshift.formats.manifest.repeat_seed`), runs the real
:func:`repshift.probes.suite.evaluate_probe` and checks whether the interval contains the truth:

* ``new``: :func:`repshift.probes.summary.run_interval`, J = repeats x folds distinct fold-runs, seeds averaged;
* ``old``: the interval as it was before, :func:`repshift.probes.summary.corrected_interval` over the seeds x folds
  scores of one fold assignment (J = seeds x folds: seeds counted as runs).

Sizes: every probe task's (rows per modality, folds) in config.yaml and config/demo.yaml (``--sizes`` overrides).

    .venv/bin/python validation/probe_coverage.py                     # 300 simulations per size (minutes)
    .venv/bin/python validation/probe_coverage.py --sims 40 --sizes 100:5

The last line is ``key=value`` pairs: ``coverage_new_<n>x<folds>=... coverage_old_<n>x<folds>=... target_met=...``
(target: new coverage within 0.90-0.99 at every size).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from repshift.formats.manifest import assign_folds, repeat_seed
from repshift.probes.cv import ProbeSettings, fit_probe_pipeline
from repshift.probes.suite import evaluate_probe
from repshift.probes.summary import corrected_interval, run_interval

ROOT = Path(__file__).resolve().parents[1]


#: The coverage a nominal 95% interval should reach on these simulations.
TARGET = (0.90, 0.99)


@dataclass(frozen=True)
class Simulation:
    """One simulated problem size and the probe settings it runs with."""

    n: int
    folds: int
    settings: ProbeSettings
    dims: int = 20
    delta: float = 1.0


def draw(n: int, dims: int, delta: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows (balanced labels 0/1) of two unit-variance Gaussians whose means differ by ``delta``."""
    y_N = rng.permutation(np.arange(n) % 2)
    X_ND = rng.standard_normal((n, dims)).astype(np.float32)
    X_ND[:, 0] += np.where(y_N == 1, delta / 2, -delta / 2)
    return X_ND, y_N


def true_accuracy(sim: Simulation, *, n_train_sets: int, pool: int, seed: int) -> float:
    """The procedure's expected accuracy at a training size of ``n (folds - 1) / folds`` rows (pool estimate)."""
    rng = np.random.default_rng([seed, 1])
    X_pool, y_pool = draw(pool, sim.dims, sim.delta, rng)
    n_train = sim.n * (sim.folds - 1) // sim.folds
    accs = []
    for i in range(n_train_sets):
        X, y = draw(n_train, sim.dims, sim.delta, rng)
        pipe, _ = fit_probe_pipeline(
            X, y, settings=sim.settings, seed=sim.settings.seeds[i % len(sim.settings.seeds)]
        )
        accs.append(float(np.mean(pipe.predict(X_pool) == y_pool)))
    return float(np.mean(accs))


def one_simulation(sim: Simulation, i: int, seed: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(new low, high), (old low, high)`` accuracy intervals of simulation ``i``."""
    rng = np.random.default_rng([seed, 2, i])
    X, y = draw(sim.n, sim.dims, sim.delta, rng)
    groups = np.arange(sim.n)
    folds_RN = np.stack(
        [
            assign_folds(y, groups, n_folds=sim.folds, seed=repeat_seed(seed + i, r))
            for r in range(sim.settings.repeats)
        ]
    )
    rows = evaluate_probe(X, y, folds_RN, settings=sim.settings, groups_N=groups)
    acc = rows[rows["metric"] == "accuracy"]
    _, low, high, _ = run_interval(acc)
    old = acc[acc["repeat"] == 0]
    _, old_low, old_high = corrected_interval(
        old["value"].to_numpy(), float(old["n_train"].mean()), float(old["n_test"].mean())
    )
    return (low, high), (old_low, old_high)


def coverage(
    sim: Simulation, *, sims: int, seed: int, n_train_sets: int = 40, pool: int = 20000, jobs: int = 1
) -> dict[str, Any]:
    """Empirical coverage of the new and old intervals over ``sims`` simulations at one size."""
    truth = true_accuracy(sim, n_train_sets=n_train_sets, pool=pool, seed=seed)
    from joblib import Parallel, delayed

    hits_new = hits_old = 0
    width_new, width_old = [], []
    results = Parallel(n_jobs=jobs)(delayed(one_simulation)(sim, i, seed) for i in range(sims))
    for (lo, hi), (olo, ohi) in results:
        hits_new += lo <= truth <= hi
        hits_old += olo <= truth <= ohi
        width_new.append(hi - lo)
        width_old.append(ohi - olo)
    return {
        "truth": truth,
        "new": hits_new / sims,
        "old": hits_old / sims,
        "width_new": float(np.mean(width_new)),
        "width_old": float(np.mean(width_old)),
    }


def config_sizes(paths: Sequence[Path]) -> list[tuple[int, int]]:
    """(rows per modality, folds) of every probe task's dataset in these config files."""
    sizes = set()
    for path in paths:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        datasets: Mapping[str, Any] = cfg.get("datasets", {})
        for task in cfg.get("probes", {}).get("tasks", {}).values():
            d = datasets.get(task["dataset"], {})
            folds = int(d.get("folds", 5))
            if d.get("modality") == "attribute":
                n = int(d.get("n_base", 200)) * len(d.get("factors", [0, 0]))
            elif d.get("source") == "prompts":
                continue  # prompt sets are summarised by bootstrap, not probed with CV intervals
            else:
                classes = d.get("classes", [])
                n_classes = 2 if d.get("binary") else max(len(classes) if isinstance(classes, list) else 2, 2)
                n = int(d.get("n_per_class", 200)) * n_classes
            sizes.add((n, folds))
    return sorted(sizes)


def settings_from(path: Path, **override: Any) -> ProbeSettings:
    """The probe settings of a config file (n_jobs 1), with overrides."""
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    s = dict(cfg.get("probes", {}).get("settings", {}))
    keep = {k: s[k] for k in ("c_grid", "inner_folds", "seeds", "max_iter", "repeats") if k in s}
    return ProbeSettings.from_dict({"repeats": 3, **keep, "permutations": 0, "control": False, **override})


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=300)
    ap.add_argument("--sizes", nargs="*", help="n:folds pairs (default: the configs' probe tasks)")
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml", help="probe settings from here")
    ap.add_argument(
        "--c-grid", type=float, nargs="*", help="override the config's c_grid (one value: no inner CV)"
    )
    ap.add_argument("--repeats", type=int, help="override the config's outer-CV repeats")
    ap.add_argument("--delta", type=float, default=1.0)
    ap.add_argument("--dims", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="simulations run in parallel (joblib workers)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.sizes:
        sizes = [tuple(int(x) for x in s.split(":")) for s in args.sizes]
    else:
        sizes = config_sizes([ROOT / "config.yaml", ROOT / "config" / "demo.yaml"])
    override: dict[str, Any] = {"c_grid": args.c_grid} if args.c_grid else {}
    if args.repeats:
        override["repeats"] = args.repeats
    settings = settings_from(args.config, **override)
    results = {}
    for n, folds in sizes:
        sim = Simulation(n, folds, settings, dims=args.dims, delta=args.delta)
        r = coverage(sim, sims=args.sims, seed=args.seed, jobs=args.jobs)
        results[f"{n}x{folds}"] = r
        print(
            f"n={n} folds={folds} repeats={settings.repeats} seeds={len(settings.seeds)}: true accuracy "
            f"{r['truth']:.4f}; coverage new {r['new']:.3f} (mean width {r['width_new']:.3f}), "
            f"old {r['old']:.3f} (width {r['width_old']:.3f}) over {args.sims} simulations",
            flush=True,
        )
    met = all(TARGET[0] <= r["new"] <= TARGET[1] for r in results.values())
    pairs = [f"coverage_new_{k}={r['new']:.3f} coverage_old_{k}={r['old']:.3f}" for k, r in results.items()]
    print(" ".join(pairs) + f" sims={args.sims} target_met={met}")


if __name__ == "__main__":
    main()
