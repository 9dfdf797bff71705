#!/usr/bin/env python
"""Compare two results trees of the workflow numerically (a local run against a SLURM run).

    compare_results.py REF_RESULTS TEST_RESULTS [--subdir figs --subdir probes --subdir sae] [--h5]

Every ``*.tsv`` under the chosen subdirectories of REF must exist in TEST with the same columns and rows:
numeric columns equal within ``--rtol``/``--atol`` (NaN equals NaN), other columns identical. With ``--h5``
every HDF5 dataset (activations, SAE codes) is compared the same way. Files present in only one tree are
errors; ``logs/`` and ``benchmarks/`` (timings) are never compared. Exit status 0 when everything matches.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def _files(root: Path, subdirs: list[str], patterns: list[str]) -> set[Path]:
    out: set[Path] = set()
    for sub in subdirs:
        base = root / sub
        for pat in patterns:
            out |= {
                p.relative_to(root) for p in base.rglob(pat) if p.is_file() and not p.name.startswith(".")
            }
    return out


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> tuple[bool, float]:
    if a.shape != b.shape:
        return False, float("inf")
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        both_nan = np.isnan(a64) & np.isnan(b64)
        diff = np.where(both_nan, 0.0, np.abs(a64 - b64))
        diff = np.where(np.isnan(diff), np.inf, diff)
        ok = bool(np.all(diff <= atol + rtol * np.abs(np.where(both_nan, 0.0, b64))))
        return ok, float(diff.max()) if diff.size else 0.0
    return bool(np.array_equal(a, b)), 0.0


def compare_tsv(ref: Path, test: Path, rtol: float, atol: float) -> tuple[list[str], float]:
    a = pd.read_csv(ref, sep="\t")
    b = pd.read_csv(test, sep="\t")
    if list(a.columns) != list(b.columns):
        return [f"columns differ: {list(a.columns)} vs {list(b.columns)}"], 0.0
    if a.shape != b.shape:
        return [f"shape differs: {a.shape} vs {b.shape}"], 0.0
    errors, worst = [], 0.0
    for col in a.columns:
        x, y = a[col], b[col]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            ok, diff = _close(x.to_numpy(dtype=np.float64), y.to_numpy(dtype=np.float64), rtol, atol)
            worst = max(worst, diff)
            if not ok:
                errors.append(f"column {col!r}: max |diff| {diff:.3g}")
        elif not x.fillna("<NA>").astype(str).equals(y.fillna("<NA>").astype(str)):
            errors.append(f"column {col!r}: values differ")
    return errors, worst


def compare_h5(ref: Path, test: Path, rtol: float, atol: float) -> tuple[list[str], float]:
    import h5py

    errors, worst = [], 0.0
    with h5py.File(ref, "r") as fa, h5py.File(test, "r") as fb:
        names_a, names_b = [], []
        fa.visititems(lambda n, o: names_a.append(n) if isinstance(o, h5py.Dataset) else None)
        fb.visititems(lambda n, o: names_b.append(n) if isinstance(o, h5py.Dataset) else None)
        if sorted(names_a) != sorted(names_b):
            return [f"datasets differ: {sorted(set(names_a) ^ set(names_b))}"], 0.0
        for name in names_a:
            a, b = fa[name][()], fb[name][()]
            if isinstance(a, np.ndarray) and a.dtype.kind in "biufc":
                ok, diff = _close(a, b, rtol, atol)
                worst = max(worst, diff)
                if not ok:
                    errors.append(f"dataset {name}: max |diff| {diff:.3g} (shapes {a.shape}, {np.shape(b)})")
            elif not np.array_equal(np.asarray(a), np.asarray(b)):
                errors.append(f"dataset {name}: values differ")
    return errors, worst


def compare_trees(
    ref: Path,
    test: Path,
    subdirs: list[str],
    h5: bool = False,
    rtol: float = 1e-4,
    atol: float = 1e-6,
    subset: bool = False,
) -> tuple[int, list[str], float]:
    """(number of files compared, error lines, largest absolute difference seen).

    ``subset``: TEST holds part of REF's DAG; files of REF missing from TEST are not errors.
    """
    patterns = ["*.tsv"] + (["*.h5"] if h5 else [])
    fa, fb = _files(ref, subdirs, patterns), _files(test, subdirs, patterns)
    errors = [] if subset else [f"only in {ref}: {p}" for p in sorted(fa - fb)]
    errors += [f"only in {test}: {p}" for p in sorted(fb - fa)]
    worst = 0.0
    for rel in sorted(fa & fb):
        fn = compare_h5 if rel.suffix == ".h5" else compare_tsv
        errs, diff = fn(ref / rel, test / rel, rtol, atol)
        worst = max(worst, diff)
        errors += [f"{rel}: {e}" for e in errs]
    return len(fa & fb), errors, worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ref", type=Path, help="reference results folder (e.g. demo/results)")
    ap.add_argument("test", type=Path, help="results folder to check")
    ap.add_argument("--subdir", action="append", help="subfolders to compare (default: figs probes sae)")
    ap.add_argument("--h5", action="store_true", help="also compare HDF5 datasets")
    ap.add_argument(
        "--subset",
        action="store_true",
        help="TEST may lack files of REF (a reused reference with older outputs)",
    )
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--atol", type=float, default=1e-6)
    args = ap.parse_args(argv)
    subdirs = args.subdir or ["figs", "probes", "sae"]
    n, errors, worst = compare_trees(args.ref, args.test, subdirs, args.h5, args.rtol, args.atol, args.subset)
    for e in errors:
        print(f"MISMATCH {e}", file=sys.stderr)
    if n == 0:
        print(f"no files to compare under {args.ref} ({', '.join(subdirs)})", file=sys.stderr)
        return 1
    status = "FAILED" if errors else "OK"
    print(
        f"{status}: {n} files compared ({', '.join(subdirs)}), largest |diff| {worst:.3g}, {len(errors)} mismatches"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
