"""Dictionary comparison between two SAEs at the same layer (e.g. one trained on the VLM, the base model's).

- decoder geometry: per latent of A, the max cosine between its decoder row and any row of B; its
  distribution against a random-dictionary baseline (Gaussian rows, same shape as B); fractions matched above
  thresholds; a one-to-one matching (``scipy.optimize.linear_sum_assignment`` on the cosine matrix) and its
  mean cosine;
- activations: on the same tokens, per latent of A the max Pearson correlation of its codes with any latent of B.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment


def unit_rows(W_FD: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero)."""
    W = np.asarray(W_FD, dtype=np.float64)
    n = np.linalg.norm(W, axis=1, keepdims=True)
    return W / np.where(n > 0, n, 1.0)


def cosine_matrix(A_FD: np.ndarray, B_GD: np.ndarray) -> np.ndarray:
    if A_FD.shape[1] != B_GD.shape[1]:
        raise ValueError(
            f"decoders of different widths ({A_FD.shape[1]} vs {B_GD.shape[1]}): compare SAEs of the same d_in"
        )
    return unit_rows(A_FD) @ unit_rows(B_GD).T


def max_cosine(A_FD: np.ndarray, B_GD: np.ndarray, *, block: int = 4096) -> np.ndarray:
    """Per row of A, the max cosine with any row of B (blocked over A's rows: memory block x G)."""
    B = unit_rows(B_GD)
    A = unit_rows(A_FD)
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"decoders of different widths ({A.shape[1]} vs {B.shape[1]})")
    return np.concatenate([(A[s : s + block] @ B.T).max(1) for s in range(0, len(A), block)])


def random_dictionary(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def one_to_one(A_FD: np.ndarray, B_GD: np.ndarray, *, max_latents: int | None = None, seed: int = 0):
    """Optimal one-to-one matching on cosine (``linear_sum_assignment``, maximising). Returns (rows of A, matched
    rows of B, their cosines). With ``max_latents``, a seeded sample of that many rows of each side is matched
    (the Hungarian algorithm is cubic)."""
    rng = np.random.default_rng(seed)
    ia = np.arange(len(A_FD))
    ib = np.arange(len(B_GD))
    if max_latents is not None:
        if len(ia) > max_latents:
            ia = np.sort(rng.choice(ia, max_latents, replace=False))
        if len(ib) > max_latents:
            ib = np.sort(rng.choice(ib, max_latents, replace=False))
    cos = cosine_matrix(np.asarray(A_FD)[ia], np.asarray(B_GD)[ib])
    r, c = linear_sum_assignment(cos, maximize=True)
    return ia[r], ib[c], cos[r, c]


def code_correlation(codes_a_NF: np.ndarray, codes_b_NG: np.ndarray) -> np.ndarray:
    """Per latent of A, the max Pearson correlation of its codes with any latent of B on the same N tokens
    (latents that never vary get NaN)."""
    a = np.asarray(codes_a_NF, dtype=np.float64)
    b = np.asarray(codes_b_NG, dtype=np.float64)
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"codes on different tokens ({a.shape[0]} vs {b.shape[0]} rows): encode the same tokens"
        )
    a = a - a.mean(0)
    b = b - b.mean(0)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    corr = (a.T @ b) / np.outer(np.where(na > 0, na, 1.0), np.where(nb > 0, nb, 1.0))
    corr[:, nb == 0] = -np.inf
    best = corr.max(1)
    best[(na == 0) | ~np.isfinite(best)] = np.nan
    return best


def compare_dictionaries(
    W_a_FD: np.ndarray,
    W_b_GD: np.ndarray,
    *,
    thresholds: Sequence[float] = (0.5, 0.7, 0.9),
    max_latents: int | None = 4096,
    seed: int = 0,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Summary metrics and per-latent rows (``latent``, ``max_cos``, ``max_cos_random``, ``matched``,
    ``matched_cos``) of A's decoder against B's and against a random dictionary of B's shape."""
    best = max_cosine(W_a_FD, W_b_GD)
    rand = max_cosine(W_a_FD, random_dictionary(np.shape(W_b_GD), seed))
    ia, ib, cos = one_to_one(W_a_FD, W_b_GD, max_latents=max_latents, seed=seed)
    metrics = {
        "max_cos_mean": float(best.mean()),
        "max_cos_median": float(np.median(best)),
        "random_max_cos_mean": float(rand.mean()),
        "one_to_one_cos_mean": float(cos.mean()),
        "one_to_one_n": float(len(cos)),
    }
    for t in thresholds:
        metrics[f"frac_max_cos_above_{t:g}"] = float((best > t).mean())
        metrics[f"random_frac_max_cos_above_{t:g}"] = float((rand > t).mean())
        metrics[f"one_to_one_frac_above_{t:g}"] = float((cos > t).mean())
    matched = np.full(len(best), -1)
    matched_cos = np.full(len(best), np.nan)
    matched[ia] = ib
    matched_cos[ia] = cos
    latents = pd.DataFrame(
        {
            "latent": np.arange(len(best)),
            "max_cos": best,
            "max_cos_random": rand,
            "matched": matched,
            "matched_cos": matched_cos,
        }
    )
    return metrics, latents
