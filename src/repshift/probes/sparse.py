"""k-sparse probes on SAE codes: pick k latents on the training rows only, then a logistic probe on them.

Per outer fold (the manifest's folds; the test fold never enters selection nor fitting): latents are ranked by
the spread of their class means on the training rows (max minus min of the per-class means, Gurnee et al.'s
class-mean difference, multi-class form), the top k are kept, and a logistic probe is fit on those columns
through :func:`repshift.probes.cv.fit_probe_pipeline` (C chosen by inner CV on the training rows). The dense
probe on raw activations at the same layer goes through the same engine on the same folds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from repshift.probes.cv import ProbeSettings, fit_probe_pipeline, outer_splits


def select_latents(codes_NF: np.ndarray, y_N: np.ndarray, k: int) -> np.ndarray:
    """The k latents with the largest spread of class means (ties: lower index first)."""
    X = np.asarray(codes_NF, dtype=np.float64)
    classes = np.unique(y_N)
    if len(classes) < 2:
        raise ValueError("latent selection needs at least two classes among the training rows")
    means_KF = np.stack([X[y_N == c].mean(0) for c in classes])
    spread_F = means_KF.max(0) - means_KF.min(0)
    return np.argsort(-spread_F, kind="stable")[: int(k)]


def _accuracy(pipe, X, y) -> float:
    return float((pipe.predict(X) == y).mean())


def sparse_probe_table(
    codes_NF: np.ndarray,
    acts_ND: np.ndarray,
    y_N: np.ndarray,
    folds_N: np.ndarray,
    *,
    ks: Sequence[int],
    settings: ProbeSettings,
    groups_N: np.ndarray | None = None,
) -> pd.DataFrame:
    """Tidy rows (``probe``, ``k``, ``seed``, ``fold``, ``metric``=accuracy, ``value``, ``latents``) of the
    k-sparse probes for each k and of the dense probe (``k`` = width of the activations)."""
    y = np.asarray(y_N)
    folds = np.asarray(folds_N)
    rows = []
    for seed in settings.seeds:
        for fold, tr, te in outer_splits(folds, groups_N):
            g = None if groups_N is None else np.asarray(groups_N)[tr]
            for k in ks:
                keep = select_latents(codes_NF[tr], y[tr], k)
                pipe, info = fit_probe_pipeline(
                    codes_NF[tr][:, keep], y[tr], settings=settings, seed=seed, groups_N=g
                )
                rows.append(
                    {"probe": "sae-sparse", "k": int(k), "seed": seed, "fold": int(fold), "metric": "accuracy",
                     "value": _accuracy(pipe, codes_NF[te][:, keep], y[te]), "C": info["C"],
                     "latents": " ".join(map(str, keep))}
                )  # fmt: skip
            pipe, info = fit_probe_pipeline(acts_ND[tr], y[tr], settings=settings, seed=seed, groups_N=g)
            rows.append(
                {"probe": "dense", "k": int(acts_ND.shape[1]), "seed": seed, "fold": int(fold), "metric": "accuracy",
                 "value": _accuracy(pipe, acts_ND[te], y[te]), "C": info["C"], "latents": ""}
            )  # fmt: skip
    return pd.DataFrame(rows)
