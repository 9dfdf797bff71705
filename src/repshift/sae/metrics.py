"""Transfer metrics (a base model's SAE on another model) and latent shift between models."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from repshift.sae.codes import SparseCodes, _rows, encode, latent_density

if TYPE_CHECKING:
    from sae_lens import SAE


log = logging.getLogger(__name__)


#: A latent is "dense" when it fires on more than this fraction of tokens.
DENSE_THRESHOLD = 0.1


NEURONPEDIA_BASE = "https://www.neuronpedia.org"


def _safe_cosine(dot: np.ndarray, na: np.ndarray, nb: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Cosine with the conventions: both vectors zero -> 1, exactly one zero -> 0. Never NaN."""
    za, zb = na <= eps, nb <= eps
    cos = np.where(za | zb, 0.0, dot / np.where(za | zb, 1.0, na * nb))
    cos = np.where(za & zb, 1.0, cos)
    return np.clip(cos, -1.0, 1.0)


class TransferAccumulator:
    """:func:`transfer_metrics` over a stream of batches (same numbers as on their concatenation, up to the
    order of float summation): the fused extraction path adds one extraction batch at a time."""

    def __init__(self, d_sae: int, *, dense_threshold: float = DENSE_THRESHOLD) -> None:
        self.d_sae = int(d_sae)
        self.dense_threshold = dense_threshold
        self.sum_x_D: np.ndarray | None = None  # float64 sums for the explained variance
        self.sq_norm_sum = 0.0
        self.cos_sum = self.ratio_sum = self.mse_sum = 0.0
        self.n = 0
        self.fire_F = np.zeros(self.d_sae, dtype=np.int64)
        self.l0_sum = 0
        self.n_zero = 0

    def add(self, sae: SAE, x_BD: np.ndarray | torch.Tensor, codes: SparseCodes) -> None:
        """Add tokens ``x_BD`` and their codes (``encode(sae, x_BD)``)."""
        n = int(x_BD.shape[0])
        if codes.n_tokens != n or codes.d_sae != self.d_sae:
            raise ValueError(
                f"codes ({codes.n_tokens} tokens, d_sae {codes.d_sae}) do not match acts ({n} tokens) "
                f"and SAE (d_sae {self.d_sae})"
            )
        if n == 0:
            return
        with torch.inference_mode():
            x = _rows(x_BD, 0, n).to(device=sae.device, dtype=torch.float32)
            z = torch.from_numpy(codes.to_dense()).to(device=sae.device, dtype=sae.dtype)
            x_hat = sae.decode(z).float()
            x64, xh64 = x.double().cpu().numpy(), x_hat.double().cpu().numpy()
        nx, nxh = np.linalg.norm(x64, axis=1), np.linalg.norm(xh64, axis=1)
        self.cos_sum += float(_safe_cosine((x64 * xh64).sum(1), nx, nxh).sum())
        self.ratio_sum += float((nxh / np.where(nx < 1e-4, 1.0, nx)).sum())
        self.mse_sum += float(((x64 - xh64) ** 2).sum())
        self.sq_norm_sum += float((nx**2).sum())
        sum_D = x64.sum(0)
        self.sum_x_D = sum_D if self.sum_x_D is None else self.sum_x_D + sum_D
        self.n += n
        self.fire_F += codes.fire_count_F()
        l0_N = codes.l0_N
        self.l0_sum += int(l0_N.sum())
        self.n_zero += int((l0_N == 0).sum())

    def _explained_variance(self) -> float:
        """1 - E||x - x̂||² / (E||x||² - ||E x||²), from float64 sums, as sae-lens' ExplainedVarianceCalculator.

        Own code rather than that class because its public ``compute`` tests for constant inputs with an
        absolute threshold: here the test is *relative*; where the total variance is below 1e-9 of the mean
        squared norm (e.g. BOS, the same vector in every example) it is rounding noise, and explained variance
        is 1 if the reconstruction is exact, else 0 (sae-lens' rule)."""
        mean_sq = self.sq_norm_sum / self.n
        total_var = mean_sq - float(((self.sum_x_D / self.n) ** 2).sum())
        mse = self.mse_sum / self.n
        if total_var <= max(1e-10, 1e-9 * mean_sq):
            return 1.0 if mse <= max(1e-10, 1e-9 * mean_sq) else 0.0
        return 1.0 - mse / total_var

    def result(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("transfer_metrics got no tokens")
        ev = self._explained_variance()
        freq_F = self.fire_F / self.n
        return {
            "n_tokens": float(self.n),
            "d_sae": float(self.d_sae),
            "explained_variance": ev,
            "fvu": 1.0 - ev,
            "mse": self.mse_sum / self.n,
            "l0": self.l0_sum / self.n,
            "cosine": self.cos_sum / self.n,
            "norm_ratio": self.ratio_sum / self.n,
            "dead_frac": float((freq_F == 0).mean()),
            "dense_frac": float((freq_F > self.dense_threshold).mean()),
            "n_zero_code": float(self.n_zero),
        }


def transfer_metrics(
    sae: SAE,
    acts_ND: np.ndarray | torch.Tensor,
    codes: SparseCodes | None = None,
    *,
    dense_threshold: float = DENSE_THRESHOLD,
    batch_size: int = 2048,
) -> dict[str, float]:
    """How well ``sae`` reconstructs ``acts_ND`` (an SAE transferred to another model, Kissane et al.).

    - ``fvu`` / ``explained_variance``: global, as ``sae_lens.evals.ExplainedVarianceCalculator`` computes it:
      FVU = sum_i ||x_i - x̂_i||² / sum_i ||x_i - mean(x)||²; explained_variance = 1 - FVU.
    - ``mse``: mean over tokens of ||x - x̂||² (sum over dims, as sae-lens).
    - ``l0``: mean active latents per token; ``cosine``: mean cos(x, x̂) (both zero -> 1, one zero -> 0);
      ``norm_ratio``: mean ||x̂||/||x|| (denominator 1 where ||x|| < 1e-4, as sae-lens' ``l2_ratio``).
    - ``dead_frac`` (never fires), ``dense_frac`` (fires on > ``dense_threshold`` of tokens).
    - ``n_tokens``, ``n_zero_code`` (tokens whose code is all zeros; they reconstruct to b_dec, no NaN).
    """
    n = int(acts_ND.shape[0])
    if n == 0:
        raise ValueError("transfer_metrics got no tokens")
    if codes is None:
        codes = encode(sae, acts_ND, batch_size=batch_size)
    if codes.n_tokens != n or codes.d_sae != int(sae.cfg.d_sae):
        raise ValueError(
            f"codes ({codes.n_tokens} tokens, d_sae {codes.d_sae}) do not match acts ({n} tokens) "
            f"and SAE (d_sae {sae.cfg.d_sae})"
        )
    acc = TransferAccumulator(codes.d_sae, dense_threshold=dense_threshold)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        acc.add(sae, _rows(acts_ND, start, stop), codes.slice_tokens(start, stop))
    return acc.result()


def neuronpedia_url(neuronpedia_id: str | None, latent: int) -> str:
    """Link to a latent's Neuronpedia page, or "" when the SAE has no Neuronpedia id (never fetched)."""
    if not neuronpedia_id:
        return ""
    return f"{NEURONPEDIA_BASE}/{neuronpedia_id.strip('/')}/{int(latent)}"


def _js_divergence_base2(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence in bits (log base 2), so it lies in [0, 1]; inputs need not be normalised.

    Negative entries are treated by magnitude. Both all-zero -> 0; exactly one all-zero -> 1 (maximal).
    Computed as 0.5·KL(p‖m) + 0.5·KL(q‖m) with m = (p+q)/2, which is exactly symmetric in (p, q).
    """
    p = np.abs(np.asarray(p, dtype=np.float64))
    q = np.abs(np.asarray(q, dtype=np.float64))
    sp, sq = p.sum(), q.sum()
    if sp <= 0 and sq <= 0:
        return 0.0
    if sp <= 0 or sq <= 0:
        return 1.0
    p, q = p / sp, q / sq
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return float(np.clip(0.5 * kl(p) + 0.5 * kl(q), 0.0, 1.0))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; when either vector is constant: 1 if the vectors are equal, else 0 (never NaN)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    da, db = a - a.mean(), b - b.mean()
    na, nb = np.sqrt((da * da).sum()), np.sqrt((db * db).sum())
    if na == 0 or nb == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.clip((da * db).sum() / (na * nb), -1.0, 1.0))


#: a mean-activation change smaller than this fraction of the largest mean activation is float noise (the
#: same activations encoded in two jobs differ in the last bits), not a gained or lost latent
MEAN_CHANGE_RTOL = 1e-5


def _top_changes(
    direction: str,
    delta_F: np.ndarray,
    k: int,
    table: dict[str, np.ndarray],
    neuronpedia_id: str | None,
    tol: float = 0.0,
) -> pd.DataFrame:
    latents = np.flatnonzero(delta_F > tol)
    order = np.lexsort((latents, -delta_F[latents]))  # largest change first, ties by latent index
    latents = latents[order][:k]
    return pd.DataFrame(
        {
            "direction": np.array([direction] * len(latents), dtype=object),
            "latent": latents.astype(np.int64),
            **{name: col[latents] for name, col in table.items()},
            "neuronpedia_url": [neuronpedia_url(neuronpedia_id, int(i)) for i in latents],
        }
    )


SHIFT_COLUMNS = ["direction", "latent", "freq_a", "freq_b", "mean_a", "mean_b", "neuronpedia_url"]


def shift_metrics(
    codes_a: SparseCodes,
    codes_b: SparseCodes,
    *,
    top_k: int = 20,
    neuronpedia_id: str | None = None,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Compare SAE codes of the SAME N tokens under model a (base) and model b (adapted).

    Metrics (never NaN):
    - ``token_cosine``: mean per-token cosine of codes; both codes zero -> 1 (counted in ``n_both_zero``),
      exactly one zero -> 0 (counted in ``n_one_zero``).
    - ``mean_code_cosine``: cosine of the mean codes (the original notebooks' metric).
    - ``jaccard``: mean per-token Jaccard index of active-latent sets (both empty -> 1).
    - ``l2``: mean per-token L2 distance between codes.
    - ``mean_code_pearson``: Pearson correlation of the mean codes.
    - ``js_divergence``: Jensen–Shannon divergence, base 2 (in [0, 1]), between the mean-activation vectors
      normalised to sum 1.
    - ``freq_js_divergence``: the same between firing-frequency distributions.
    - ``l0_a``, ``l0_b``, ``n_tokens``.

    The DataFrame lists the latents gained and lost from a to b: the ``top_k`` largest increases
    (``freq_gained``, ``mean_gained``) and decreases (``freq_lost``, ``mean_lost``) in firing frequency and in
    mean activation (over all tokens), with columns ``SHIFT_COLUMNS``.
    """
    if codes_a.n_tokens != codes_b.n_tokens:
        raise ValueError(
            f"shift_metrics compares the same tokens under two models, got {codes_a.n_tokens} and "
            f"{codes_b.n_tokens} tokens"
        )
    if codes_a.d_sae != codes_b.d_sae:
        raise ValueError(f"codes come from SAEs of different widths ({codes_a.d_sae} vs {codes_b.d_sae})")
    n = codes_a.n_tokens
    denom = max(n, 1)

    cos_N, jac_N, l2_N = _per_token_overlap(codes_a, codes_b)
    l0a_N, l0b_N = codes_a.l0_N.astype(np.float64), codes_b.l0_N.astype(np.float64)
    za, zb = l0a_N == 0, l0b_N == 0
    mean_a, mean_b = codes_a.mean_F(), codes_b.mean_F()
    freq_a, freq_b = latent_density(codes_a), latent_density(codes_b)
    norm_ma, norm_mb = np.linalg.norm(mean_a), np.linalg.norm(mean_b)
    metrics = {
        "n_tokens": float(n),
        "token_cosine": float(cos_N.sum() / denom) if n else 1.0,
        "mean_code_cosine": float(_safe_cosine(np.dot(mean_a, mean_b), norm_ma, norm_mb)),
        "jaccard": float(jac_N.sum() / denom) if n else 1.0,
        "l2": float(l2_N.sum() / denom),
        "mean_code_pearson": _pearson(mean_a, mean_b),
        "js_divergence": _js_divergence_base2(mean_a, mean_b),
        "freq_js_divergence": _js_divergence_base2(freq_a, freq_b),
        "n_both_zero": float((za & zb).sum()),
        "n_one_zero": float((za ^ zb).sum()),
        "l0_a": float(l0a_N.mean()) if n else 0.0,
        "l0_b": float(l0b_N.mean()) if n else 0.0,
    }

    return metrics, _changes(mean_a, mean_b, freq_a, freq_b, top_k, neuronpedia_id)


def _per_token_overlap(codes_a: SparseCodes, codes_b: SparseCodes):
    """(cosine, Jaccard, L2 distance) of each token's two codes, without densifying: the (token, latent) keys of
    both canonical CSR codes are matched. Both codes zero: cosine 1, Jaccard 1."""
    n, d_sae = codes_a.n_tokens, codes_a.d_sae
    tok_a, tok_b = codes_a.token_ids(), codes_b.token_ids()
    keys_a = tok_a * d_sae + codes_a.indices
    keys_b = tok_b * d_sae + codes_b.indices
    _, ia, ib = np.intersect1d(keys_a, keys_b, assume_unique=True, return_indices=True)
    tok_common = tok_a[ia]
    va, vb = codes_a.values[ia].astype(np.float64), codes_b.values[ib].astype(np.float64)
    dot_N = np.bincount(tok_common, weights=va * vb, minlength=n)
    inter_N = np.bincount(tok_common, minlength=n).astype(np.float64)
    l0a_N, l0b_N = codes_a.l0_N.astype(np.float64), codes_b.l0_N.astype(np.float64)
    sqa_N, sqb_N = codes_a.sq_norm_N(), codes_b.sq_norm_N()
    cos_N = _safe_cosine(dot_N, np.sqrt(sqa_N), np.sqrt(sqb_N))
    union_N = l0a_N + l0b_N - inter_N
    jac_N = np.where(union_N > 0, inter_N / np.where(union_N > 0, union_N, 1.0), 1.0)
    # ||a-b||² = (a-only part) + (b-only part) + (shared latents), without cancellation for equal codes
    l2sq_N = (
        (sqa_N - np.bincount(tok_common, weights=va * va, minlength=n))
        + (sqb_N - np.bincount(tok_common, weights=vb * vb, minlength=n))
        + np.bincount(tok_common, weights=(va - vb) ** 2, minlength=n)
    )
    return cos_N, jac_N, np.sqrt(np.clip(l2sq_N, 0.0, None))


def _changes(mean_a, mean_b, freq_a, freq_b, top_k: int, neuronpedia_id) -> pd.DataFrame:
    """The ``top_k`` latents gained and lost in firing frequency and in mean activation (:data:`SHIFT_COLUMNS`)."""
    table = {"freq_a": freq_a, "freq_b": freq_b, "mean_a": mean_a, "mean_b": mean_b}
    scale = max(float(np.abs(mean_a).max(initial=0.0)), float(np.abs(mean_b).max(initial=0.0)))
    mean_tol = MEAN_CHANGE_RTOL * scale
    frames = [
        _top_changes("freq_gained", freq_b - freq_a, top_k, table, neuronpedia_id),
        _top_changes("freq_lost", freq_a - freq_b, top_k, table, neuronpedia_id),
        _top_changes("mean_gained", mean_b - mean_a, top_k, table, neuronpedia_id, mean_tol),
        _top_changes("mean_lost", mean_a - mean_b, top_k, table, neuronpedia_id, mean_tol),
    ]
    non_empty = [f for f in frames if len(f)]
    changes = pd.concat(non_empty, ignore_index=True) if non_empty else frames[0]
    return changes[SHIFT_COLUMNS]


#: Shift metrics that get bootstrap intervals (per-token means and mean-code comparisons; counts do not).
BOOTSTRAP_METRICS = (
    "token_cosine",
    "mean_code_cosine",
    "jaccard",
    "l2",
    "mean_code_pearson",
    "js_divergence",
    "freq_js_divergence",
    "l0_a",
    "l0_b",
)


def _shift_scalars(codes_a: SparseCodes, codes_b: SparseCodes) -> dict[str, float]:
    metrics, _ = shift_metrics(codes_a, codes_b, top_k=0)
    return metrics


def bootstrap_shift_intervals(
    codes_a: SparseCodes,
    codes_b: SparseCodes,
    example_T: np.ndarray,
    *,
    n_boot: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of :data:`BOOTSTRAP_METRICS` over examples (sentences, captions).

    Tokens of one example are not independent, so whole examples are resampled with replacement (``example_T``:
    the example of each token row of both codes; ``n_boot`` resamples, seeded by ``seed``) and every metric is
    recomputed on the resampled tokens. Returns ``{metric: (lo, hi)}`` (NaN bounds with fewer than 2 examples).
    """
    example_T = np.asarray(example_T)
    if example_T.shape != (codes_a.n_tokens,):
        raise ValueError(
            f"example_T must have one entry per token ({codes_a.n_tokens}), got {example_T.shape}"
        )
    examples, inverse = np.unique(example_T, return_inverse=True)
    nan = {m: (math.nan, math.nan) for m in BOOTSTRAP_METRICS}
    if examples.size < 2 or n_boot < 1:
        return nan
    tokens_of = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    rng = np.random.default_rng([int(seed), 7])
    draws = {m: [] for m in BOOTSTRAP_METRICS}
    for _ in range(int(n_boot)):
        pick = rng.integers(0, examples.size, size=examples.size)
        rows = np.concatenate([tokens_of[e] for e in pick])
        metrics = _shift_scalars(codes_a.take(rows), codes_b.take(rows))
        for m in BOOTSTRAP_METRICS:
            draws[m].append(metrics[m])
    tail = 100 * (1 - confidence) / 2
    return {m: tuple(float(x) for x in np.percentile(v, [tail, 100 - tail])) for m, v in draws.items()}
