"""The probe intervals cover the truth on simulated data; counting seeds as fold-runs (the old way) does not."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repshift.probes.cv import ProbeSettings
from repshift.probes.summary import corrected_interval, fold_run_values, run_interval

ROOT = Path(__file__).resolve().parents[3]


def _coverage_module():
    spec = importlib.util.spec_from_file_location("probe_coverage", ROOT / "validation" / "probe_coverage.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_corrected_interval_matches_hand_computed_values():
    # 6 fold-run scores, n_train 80, n_test 20 (n2/n1 = 0.25)
    values = [0.80, 0.85, 0.75, 0.90, 0.70, 0.80]
    # mean 0.8; deviations .00 .05 -.05 .10 -.10 .00 -> sum of squares 0.025, s^2 = 0.025 / 5 = 0.005
    # se = sqrt((1/6 + 0.25) * 0.005) = sqrt(0.0020833333) = 0.0456435465
    # t_{5, 0.975} = 2.5705818356363146 (scipy.stats.t.ppf(0.975, 5)) -> half width 0.1173304714
    mean, low, high = corrected_interval(values, 80, 20)
    np.testing.assert_allclose([mean, low, high], [0.8, 0.6826695286, 0.9173304714], atol=1e-9)
    # 90%: t_{5, 0.95} = 2.0150483733330233 -> half width 0.0919739540
    _, low90, high90 = corrected_interval(values, 80, 20, confidence=0.90)
    np.testing.assert_allclose([low90, high90], [0.7080260460, 0.8919739540], atol=1e-9)


def test_interval_counts_distinct_fold_runs_not_seeds():
    # 2 repeats x 3 folds, 2 seeds whose scores differ only by inner-CV noise (+-0.01 around the run's score)
    run_scores = {(0, 0): 0.80, (0, 1): 0.90, (0, 2): 0.70, (1, 0): 0.85, (1, 1): 0.75, (1, 2): 0.80}
    rows = pd.DataFrame(
        [
            {
                "seed": s,
                "repeat": r,
                "fold": k,
                "value": v + (0.01 if s else -0.01),
                "n_train": 80,
                "n_test": 20,
            }
            for (r, k), v in run_scores.items()
            for s in (0, 1)
        ]
    )
    runs = fold_run_values(rows)
    np.testing.assert_allclose(runs["value"], [0.80, 0.90, 0.70, 0.85, 0.75, 0.80], atol=1e-12)
    mean, low, high, J = run_interval(rows)
    assert J == 6  # not 12: seeds are averaged within each (repeat, fold)
    # the 6 run scores are the hand-computed example above
    np.testing.assert_allclose([mean, low, high], [0.8, 0.6826695286, 0.9173304714], atol=1e-9)


@pytest.mark.slow
def test_coverage_near_nominal_and_the_old_way_under_covers():
    cov = _coverage_module()
    # no inner CV (one C): the 3 seeds give identical fold scores, the case the old interval counted 3 times
    settings = ProbeSettings(c_grid=(1.0,), seeds=(0, 1, 2), repeats=1, control=False)
    sim = cov.Simulation(n=100, folds=5, settings=settings, dims=10, delta=1.0)
    r = cov.coverage(sim, sims=40, seed=0, n_train_sets=20, pool=10000)
    assert 0.55 < r["truth"] < 0.80  # a real but imperfect signal
    assert 0.85 <= r["new"] <= 1.0, r
    # the old interval (J = seeds x folds = 15, df 14) is ~40% narrower and misses the truth more often
    assert r["width_old"] < 0.7 * r["width_new"], r
    assert r["old"] < r["new"] and r["old"] <= 0.9, r
