"""The permutation null: rows through the real pipeline, band, p-value; repeated folds through the suite."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from repshift.formats.manifest import assign_folds, repeat_seed
from repshift.probes.cv import ProbeSettings
from repshift.probes.suite import EvalSpace, fit_probe_suite, run_probe_suite
from repshift.probes.summary import null_summary, summarize


def _data(n=120, d=6, signal=3.0, seed=0, repeats=2):
    rng = np.random.default_rng(seed)
    groups = np.arange(n) // 2
    y = (groups % 2).astype(np.int64)  # both rows of a group share the label
    X = rng.normal(size=(n, d))
    X[:, 0] += signal * (2 * y - 1)
    folds = np.stack([assign_folds(y, groups, n_folds=4, seed=repeat_seed(seed, r)) for r in range(repeats)])
    return X, y, groups, folds


def test_null_summary_p_value_and_band_by_hand():
    # 4 permutations x 2 fold-runs; real probe 0.7 on both runs (2 seeds on run (0, 1) averaged first)
    null_means = {0: (0.4, 0.6), 1: (0.7, 0.9), 2: (0.5, 0.5), 3: (0.6, 0.6)}  # means 0.5, 0.8, 0.5, 0.6
    rows = [
        {"probe": "permutation", "seed": i, "repeat": 0, "fold": k, "value": v}
        for i, vs in null_means.items()
        for k, v in enumerate(vs)
    ]
    rows += [
        {"probe": "logreg", "seed": 0, "repeat": 0, "fold": 0, "value": 0.7},
        {"probe": "logreg", "seed": 0, "repeat": 0, "fold": 1, "value": 0.6},
        {"probe": "logreg", "seed": 1, "repeat": 0, "fold": 1, "value": 0.8},
    ]
    frame = pd.DataFrame(rows).assign(
        train_fraction=1.0, test_space="same", metric="accuracy", n_train=30, n_test=10
    )
    out = null_summary(frame).iloc[0]
    # observed 0.7; null means >= 0.7: one (0.8) -> p = (1 + 1) / (1 + 4) = 0.4
    assert out.p_value == pytest.approx(0.4) and out.n_permutations == 4
    assert out.null_mean == pytest.approx(0.6)
    # central 95% band of [0.5, 0.5, 0.6, 0.8] (linear interpolation): 2.5% -> 0.5, 97.5% -> 0.8 - 0.075*0.2
    assert out.null_low == pytest.approx(0.5) and out.null_high == pytest.approx(0.785)


def test_permutation_null_through_the_suite_with_repeated_folds(tmp_path):
    X, y, groups, folds = _data()
    settings = ProbeSettings(c_grid=(0.1, 1.0), inner_folds=2, seeds=(0, 1), repeats=2, permutations=19)
    other = EvalSpace("twin", X + 0.5, y, folds, groups)  # a shifted copy: scored as is and re-centred
    rows, fold_probes = fit_probe_suite(X, y, folds, settings=settings, groups_N=groups, other_spaces=[other])
    real = rows[rows.probe == "logreg"]
    # 2 repeats x 4 folds x 2 seeds, each run's test rows from its own repeat's folds
    assert set(zip(real.repeat, real.fold, strict=True)) == {(r, k) for r in (0, 1) for k in range(4)}
    null = rows[(rows.probe == "permutation") & (rows.metric == "accuracy")]
    # 19 permutations x 8 fold-runs, in every space, at the real probe's C of that run (first seed)
    assert len(null[null.test_space == "same"]) == 19 * 8
    assert set(null.test_space) == {"same", "twin", "twin-recentred"}
    c_real = real[real.seed == 0].groupby(["repeat", "fold"])["C"].first()
    c_null = null.groupby(["repeat", "fold"])["C"].first()
    pd.testing.assert_series_equal(c_real, c_null, check_names=False)
    assert len(fold_probes.fold_F) == 4 * 2  # saved fold probes: repeat 0 only, per seed
    s = summarize(rows)
    acc = s[(s.probe == "logreg") & (s.metric == "accuracy") & (s.test_space == "same")].iloc[0]
    assert acc.n == 8 and acc.n_scores == 16
    assert acc["mean"] > 0.95 and abs(acc.null_mean - 0.5) < 0.1 and acc.null_high < 0.8
    assert acc.p_value == pytest.approx(1 / 20)  # no permutation reaches a near-perfect probe
    assert "permutation" not in set(s.probe)
    # the probe name survives a TSV round trip (pandas reads the string "null" back as a missing value)
    path = tmp_path / "rows.tsv"
    rows.to_csv(path, sep="\t", index=False)
    again = summarize(pd.read_csv(path, sep="\t"))
    assert again.loc[acc.name, "p_value"] == pytest.approx(1 / 20)


def test_permutation_null_on_pure_noise_is_not_significant():
    X, y, groups, folds = _data(signal=0.0, seed=3)
    settings = ProbeSettings(c_grid=(1.0,), seeds=(0,), repeats=2, permutations=19)
    s = summarize(run_probe_suite(X, y, folds, settings=settings, groups_N=groups))
    acc = s[(s.probe == "logreg") & (s.metric == "accuracy")].iloc[0]
    assert acc.p_value > 0.1 and acc.null_low < acc["mean"] < acc.null_high + 0.05


def test_inner_permutation_c_reruns_inner_cv():
    X, y, groups, folds = _data(n=80, repeats=1)
    settings = ProbeSettings(
        c_grid=(1e-4, 10.0), inner_folds=2, seeds=(0,), permutations=3, permutation_c="inner"
    )
    rows = run_probe_suite(X, y, folds[0], settings=settings, groups_N=groups)
    c_real = set(rows.loc[rows.probe == "logreg", "C"])
    assert c_real == {10.0}  # a strong signal: inner CV picks the weak penalty
    # on permuted labels inner CV picks its own C (log-loss favours the strong penalty on noise)
    assert 1e-4 in set(rows.loc[rows.probe == "permutation", "C"])
    with pytest.raises(ValueError, match="permutation_c"):
        ProbeSettings(permutation_c="best")


def test_small_and_batched_null_fits_agree():
    """Below batched_min_size each permutation is one scikit-learn fit, above it one batched solve with the real
    probes of its fold-run: the same permutations (seeded per fold-run) give the same null rows either way."""

    X, y, groups, folds = _data(n=80, d=5, signal=1.0, seed=4)
    settings = ProbeSettings(c_grid=(1.0,), seeds=(0,), repeats=2, permutations=7)

    def null_rows(min_size):
        rows = run_probe_suite(
            X, y, folds, settings=dataclasses.replace(settings, batched_min_size=min_size), groups_N=groups
        )
        null = rows[(rows.probe == "permutation") & (rows.metric == "accuracy")]
        return null.sort_values(["repeat", "fold", "seed"]).reset_index(drop=True)

    one_by_one, batched = null_rows(10**9), null_rows(0)
    assert len(one_by_one) == 7 * 8
    # identical labels and C; the two solvers stop within scikit-learn's tolerance, so at most a row near the
    # boundary may flip (1 of a fold's ~20 test rows moves the accuracy by ~0.05)
    pd.testing.assert_frame_equal(one_by_one.drop(columns="value"), batched.drop(columns="value"))
    diff = (one_by_one.value - batched.value).abs()
    assert diff.max() <= 0.051 and (diff == 0).mean() > 0.9
    assert one_by_one.value.std() > 0.02  # the permutations differ from each other
