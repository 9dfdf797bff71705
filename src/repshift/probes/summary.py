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
    """``(mean, low, high)`` of repeated-CV scores: the corrected t-interval described in :func:`summarize`
    (NaN bounds when fewer than 2 scores), clipped to [0, 1]."""
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


def summarize(rows: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """Per probe x train_fraction x test_space x metric: mean over seeds x folds, interval, n.

    Interval (:data:`INTERVAL_METHOD`): the corrected repeated cross-validation t-interval of Nadeau & Bengio
    (2003) as used by Bouckaert & Frank (2004). CV scores are not independent (training sets overlap; seeds reuse
    the same test folds), so the naive variance of the mean, s^2 / n, is too small. With n = seeds x folds scores of
    sample variance s^2 and mean test/train sizes n2/n1, the standard error is ``sqrt((1/n + n2/n1) * s^2)`` and the
    interval is ``mean +- t_{n-1, (1+confidence)/2} * se``, clipped to [0, 1] (all metrics are proportions). It is
    approximate and on the conservative side; it is NaN when n < 2 and zero-width when all scores agree.

    Added columns: ``majority_accuracy`` (mean majority-class baseline accuracy for the same test space) and
    ``control_mean`` (the shuffled-label control's mean for the same metric and test space, full training set);
    NaN where the rows hold no such probe.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    rows = rows.copy()
    for column, default in (("probe", "logreg"), ("train_fraction", 1.0), ("test_space", "same")):
        if column not in rows:
            rows[column] = default
    keys = ["probe", "train_fraction", "test_space", "metric"]
    out = []
    for key, sub in rows.dropna(subset=["value"]).groupby(keys, sort=True):
        values = sub["value"].to_numpy(dtype=float)
        n = values.size
        n_train, n_test = float(sub["n_train"].mean()), float(sub["n_test"].mean())
        mean, low, high = corrected_interval(values, n_train, n_test, confidence=confidence)
        sd = float(values.std(ddof=1)) if n >= 2 else math.nan
        out.append(
            dict(zip(keys, key, strict=True))
            | {
                "mean": mean,
                "ci_low": low,
                "ci_high": high,
                "sd": sd,
                "n": n,
                "n_train": n_train,
                "n_test": n_test,
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
    return summary.reset_index(drop=True)
