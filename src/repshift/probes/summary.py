"""Summaries of fold-run scores: means and corrected repeated-CV intervals."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

logger = logging.getLogger(__name__)


#: How :func:`summarize` builds its intervals.
INTERVAL_METHOD = "corrected-repeated-cv-t"


# ------------------------------------------------------------------------------------------------ summary
def corrected_interval(
    values: Any, n_train: float, n_test: float, *, confidence: float = 0.95
) -> tuple[float, float, float]:
    """``(mean, low, high)`` of J distinct fold-run scores (one per (repeat, fold), seeds already averaged:
    :func:`fold_run_values`): the corrected t-interval described in :func:`summarize`, df = J - 1 (NaN bounds
    when fewer than 2 scores), clipped to [0, 1]."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if not v.size:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    se = math.sqrt((1.0 / v.size + n_test / n_train) * float(v.var(ddof=1)))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=v.size - 1)) * se
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def fold_run_values(rows: pd.DataFrame) -> pd.DataFrame:
    """One score per distinct outer fold-run: ``rows`` averaged over seeds within each (repeat, fold).

    Seeds only reshuffle the inner CV (and the learning curve's subsample) on the same training and test rows, so
    the scores of one fold-run are not independent replicates: counting them as runs made every interval ~40%
    too narrow (15 "runs" that were 5 fold scores three times). Rows without a ``repeat`` column are repeat 0.
    Returns columns ``repeat``, ``fold``, ``value``, ``n_train``, ``n_test``.
    """
    frame = rows.assign(repeat=rows["repeat"] if "repeat" in rows else 0)
    frame = frame.dropna(subset=["value"])
    return frame.groupby(["repeat", "fold"], sort=True)[["value", "n_train", "n_test"]].mean().reset_index()


def run_interval(rows: pd.DataFrame, *, confidence: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, low, high, J)`` of one series: :func:`corrected_interval` over its J distinct fold-runs
    (:func:`fold_run_values`)."""
    runs = fold_run_values(rows)
    values = runs["value"].to_numpy(dtype=float)
    mean, low, high = corrected_interval(
        values, float(runs["n_train"].mean()), float(runs["n_test"].mean()), confidence=confidence
    )
    return mean, low, high, int(values.size)


def null_summary(rows: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """Per test_space x metric: the permutation null (``probe == "permutation"``) and the real probe's p-value.

    Each permutation's statistic is its mean over the fold-runs, like the real probe's (seed-averaged fold-runs,
    :func:`fold_run_values`). Columns: ``null_mean``, ``null_low`` / ``null_high`` (the central ``confidence``
    band of the N permutation means), ``n_permutations`` and ``p_value = (1 + #{null >= observed}) / (1 + N)``
    for the full-data logistic probe (one-sided: the probe beats chance). Empty without null rows.
    """
    null = rows[rows["probe"] == "permutation"]
    real = rows[(rows["probe"] == "logreg") & (rows["train_fraction"] == 1.0)]
    tail = (1 - confidence) / 2
    out = []
    for (space, metric), sub in null.dropna(subset=["value"]).groupby(["test_space", "metric"], sort=True):
        perm_means = sub.groupby("seed")["value"].mean().to_numpy(dtype=float)
        obs_rows = real[(real["test_space"] == space) & (real["metric"] == metric)]
        observed = float(fold_run_values(obs_rows)["value"].mean()) if len(obs_rows) else math.nan
        n = perm_means.size
        p = (1 + int(np.sum(perm_means >= observed))) / (1 + n) if not math.isnan(observed) else math.nan
        low, high = np.quantile(perm_means, [tail, 1 - tail])
        out.append(
            {
                "test_space": space,
                "metric": metric,
                "null_mean": float(perm_means.mean()),
                "null_low": float(low),
                "null_high": float(high),
                "n_permutations": n,
                "p_value": p,
            }
        )
    return pd.DataFrame(
        out,
        columns=["test_space", "metric", "null_mean", "null_low", "null_high", "n_permutations", "p_value"],
    )


def summarize(rows: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """Per probe x train_fraction x test_space x metric: mean over fold-runs, interval, n.

    Interval (:data:`INTERVAL_METHOD`): the corrected repeated cross-validation t-interval of Nadeau & Bengio
    (2003) as used by Bouckaert & Frank (2004), over the J = repeats x folds distinct outer fold-runs (scores are
    first averaged over seeds within a run, :func:`fold_run_values`: seeds reuse the same training and test
    rows). CV scores are not independent (training sets overlap), so the naive variance of the mean, s^2 / J, is
    too small. With J fold-run scores of sample variance s^2 and mean test/train sizes n2/n1, the standard error is
    ``sqrt((1/J + n2/n1) * s^2)`` and the interval is ``mean +- t_{J-1, (1+confidence)/2} * se``, clipped to [0, 1]
    (all metrics are proportions). validation/probe_coverage.py measures its coverage on simulated data; it is NaN
    when J < 2 and zero-width when all scores agree. ``n`` is J; ``n_scores`` the rows behind it.

    Added columns: ``majority_accuracy`` (mean majority-class baseline accuracy for the same test space),
    ``control_mean`` (the single shuffled-label control's mean for the same metric and test space, full training
    set) and, from the permutation null (:func:`null_summary`), ``null_mean``, ``null_low``, ``null_high``,
    ``n_permutations`` for every row of that test space and metric, ``p_value`` on the full-data logistic rows.
    NaN where the rows hold no such probe. The null's own rows are summarised only as these columns.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    rows = rows.copy()
    for column, default in (
        ("probe", "logreg"),
        ("train_fraction", 1.0),
        ("test_space", "same"),
        ("repeat", 0),
    ):
        if column not in rows:
            rows[column] = default
    keys = ["probe", "train_fraction", "test_space", "metric"]
    out = []
    scored = rows[rows["probe"] != "permutation"].dropna(subset=["value"])
    for key, sub in scored.groupby(keys, sort=True):
        mean, low, high, n_runs = run_interval(sub, confidence=confidence)
        runs = fold_run_values(sub)["value"]
        out.append(
            dict(zip(keys, key, strict=True))
            | {
                "mean": mean,
                "ci_low": low,
                "ci_high": high,
                "sd": float(runs.std(ddof=1)) if n_runs >= 2 else math.nan,
                "n": n_runs,
                "n_scores": len(sub),
                "n_train": float(sub["n_train"].mean()),
                "n_test": float(sub["n_test"].mean()),
                "interval": f"{INTERVAL_METHOD}-{round(confidence * 100)}",
            }
        )
    summary = pd.DataFrame(out)
    if summary.empty:
        return summary
    majority = (
        rows[(rows.probe == "majority") & (rows.metric == "accuracy")]
        .groupby("test_space")["value"]
        .mean()
        .rename("majority_accuracy")
    )
    control = (
        rows[(rows.probe == "control") & (rows.train_fraction == 1.0)]
        .groupby(["test_space", "metric"])["value"]
        .mean()
        .rename("control_mean")
    )
    summary = summary.merge(majority, how="left", left_on="test_space", right_index=True)
    summary = summary.merge(control, how="left", left_on=["test_space", "metric"], right_index=True)
    null = null_summary(rows, confidence=confidence)
    summary = summary.merge(null, how="left", on=["test_space", "metric"])
    real = (summary["probe"] == "logreg") & (summary["train_fraction"] == 1.0)
    summary.loc[~real, "p_value"] = math.nan
    return summary.reset_index(drop=True)
