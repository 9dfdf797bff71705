"""Probes: nested grouped CV, chance references, leakage, scaling, cross-space evaluation, saved probes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler

from repshift.probes import cv as probes_cv
from repshift.probes import saved as probes_saved
from repshift.probes import suite as probes_suite
from repshift.probes import summary as probes_summary
from repshift.probes.cv import (
    ROW_COLUMNS,
    ProbeSettings,
    check_same_width,
    fit_probe_pipeline,
    inner_splits,
    outer_splits,
)
from repshift.probes.saved import FittedProbe, direction_cosine, fit_final_probe
from repshift.probes.suite import evaluate_probe, run_probe_suite
from repshift.probes.summary import summarize

FAST = ProbeSettings(c_grid=(0.01, 0.1, 1.0, 10.0), inner_folds=3, seeds=(0, 1), control=False)


def make_folds(y_N, groups_N, *, n_folds=5, seed=0):
    """Stored-fold stand-in: stratified by label, grouped by base image."""
    folds_N = np.full(len(y_N), -1)
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(cv.split(np.zeros((len(y_N), 1)), y_N, groups_N)):
        folds_N[test] = k
    assert (folds_N >= 0).all()
    return folds_N


def make_binary(*, n=200, d=20, seed=0, group_size=2, separable=True, signal=0.0):
    """Rows in groups of `group_size`; features on very different scales. Feature 0 separates the classes
    (`separable`) or carries a noisy signal of strength `signal` (`separable=False`; 0 = no signal)."""
    rng = np.random.default_rng(seed)
    groups_N = np.arange(n) // group_size
    y_N = rng.integers(0, 2, size=n)
    X_ND = rng.normal(size=(n, d)) * rng.uniform(0.1, 100.0, size=d) + rng.normal(0, 50, size=d)
    if separable:
        X_ND[:, 0] = (2 * y_N - 1) * rng.uniform(1.0, 2.0, size=n)
    elif signal:
        X_ND[:, 0] = rng.normal(size=n) + signal * (2 * y_N - 1)
    return X_ND, y_N, groups_N, make_folds(y_N, groups_N, seed=seed)


def accuracy(rows: pd.DataFrame, probe: str = "logreg", space: str = "same") -> float:
    sel = (rows.probe == probe) & (rows.metric == "accuracy") & (rows.test_space == space)
    return float(rows.loc[sel, "value"].mean())


# ------------------------------------------------------------------------------------------------ settings
def test_settings_from_dict_rejects_unknown_keys_and_coerces_lists():
    s = ProbeSettings.from_dict({"c_grid": [0.1, 1], "seeds": [3], "train_fractions": [0.5, 1]})
    assert s.c_grid == (0.1, 1.0) and s.seeds == (3,) and s.train_fractions == (0.5, 1.0)
    with pytest.raises(ValueError, match="'c_gird'"):
        ProbeSettings.from_dict({"c_gird": [1.0]})
    with pytest.raises(ValueError, match="train_fractions"):
        ProbeSettings(train_fractions=(0.0,))
    assert ProbeSettings.from_dict(s.to_dict()) == s


def test_check_same_width_names_both_spaces():
    with pytest.raises(ValueError) as err:
        check_same_width(np.zeros((3, 2304)), np.zeros((3, 1152)), name_a="gemma", name_b="siglip")
    assert str(err.value) == (
        "cannot probe across spaces of different widths: gemma has 2304 dims, siglip has 1152"
    )
    check_same_width(np.zeros((3, 8)), np.zeros((5, 8)), name_a="a", name_b="b")


# ------------------------------------------------------------------------------------------- core accuracy
def test_separable_binary_is_near_perfect_with_tidy_rows():
    X, y, groups, folds = make_binary()
    rows = evaluate_probe(X, y, folds, settings=FAST, groups_N=groups)
    assert tuple(rows.columns) == ROW_COLUMNS
    assert set(rows.metric) == {"accuracy", "macro_f1", "auroc"}
    assert len(rows) == len(FAST.seeds) * 5 * 3
    assert set(rows.seed) == set(FAST.seeds) and set(rows.fold) == set(range(5))
    assert accuracy(rows) >= 0.98
    assert rows.loc[rows.metric == "auroc", "value"].min() >= 0.99
    assert rows.C.isin(FAST.c_grid).all()
    assert (rows.n_train + rows.n_test == len(y)).all()


def test_probe_fitting_shows_progress_on_stderr(capsys):
    # run_step points sys.stderr at the rule's log: the bar counts every (seed, fold) fit there
    X, y, groups, folds = make_binary(n=60)
    settings = dataclasses.replace(FAST, seeds=(0,), c_grid=(1.0,), permutations=2)
    run_probe_suite(X, y, folds, settings=settings, groups_N=groups)
    err = capsys.readouterr().err
    assert "probe logreg: 100%" in err and "5/5 [" in err
    assert "probe null (2 permutations per fit): 100%" in err


def test_shuffled_labels_give_chance():
    means = []
    for seed in range(4):
        X, y, groups, folds = make_binary(seed=seed, separable=False)
        rows = evaluate_probe(X, y, folds, settings=FAST, groups_N=groups)
        means.append(accuracy(rows))
    assert abs(np.mean(means) - 0.5) < 0.07, means
    assert all(abs(m - 0.5) < 0.15 for m in means), means


def test_control_is_near_chance_while_the_real_probe_is_high():
    settings = ProbeSettings(c_grid=(0.01, 0.1, 1.0, 10.0), seeds=(0, 1, 2), control=True)
    X, y, groups, folds = make_binary(seed=5)
    rows = run_probe_suite(X, y, folds, settings=settings, groups_N=groups)
    assert set(rows.probe) == {"logreg", "control", "majority"}
    assert accuracy(rows) >= 0.98
    assert abs(accuracy(rows, "control") - 0.5) < 0.12
    assert abs(accuracy(rows, "majority") - 0.5) < 0.12
    assert (rows.loc[rows.probe == "majority", "seed"] == -1).all()


def test_multiclass_four_classes():
    rng = np.random.default_rng(1)
    n, d = 200, 20
    y = np.repeat(np.arange(4), n // 4)
    centers = rng.normal(0, 4, size=(4, d))
    X = centers[y] + rng.normal(size=(n, d))
    groups = np.arange(n) // 2  # groups never mix classes here: rows 2i, 2i+1 share a label
    folds = make_folds(y, groups)
    rows = evaluate_probe(X, y, folds, settings=FAST, groups_N=groups)
    assert set(rows.metric) == {"accuracy", "macro_f1"}  # auroc only for binary tasks
    assert accuracy(rows) >= 0.95
    probe = fit_final_probe(X, y, settings=FAST, groups_N=groups)
    assert probe.coef_KD.shape == (4, d) and list(probe.classes_K) == [0, 1, 2, 3]
    assert (probe.predict(X) == y).mean() >= 0.95
    with pytest.raises(ValueError, match="binary"):
        _ = probe.direction_D


# -------------------------------------------------------------------------------------------------- leakage
def make_memorisable(*, n_groups=40, group_size=5, seed=0):
    """The label is a random property of the group; features say which group a row is in, nothing else."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), group_size)
    label_G = rng.permutation(np.arange(n_groups) % 2)
    y = label_G[groups]
    X = np.eye(n_groups)[groups] + rng.normal(0, 0.05, size=(groups.size, n_groups))
    return X, y, groups


def test_group_identity_cannot_leak_through_the_folds():
    X, y, groups = make_memorisable()
    grouped_folds = make_folds(y, groups)
    rows = evaluate_probe(X, y, grouped_folds, settings=FAST, groups_N=groups)
    assert accuracy(rows) < 0.7  # nothing to learn about unseen groups

    # The same data with row-wise folds (a group on both sides) is memorised: the data can leak, the folds don't.
    leaky_folds = np.arange(y.size) % 5
    rows = evaluate_probe(X, y, leaky_folds, settings=FAST)
    assert accuracy(rows) > 0.95
    with pytest.raises(ValueError, match="span more than one fold"):
        evaluate_probe(X, y, leaky_folds, settings=FAST, groups_N=groups)


def test_indices_used_never_put_a_group_on_both_sides(monkeypatch):
    X, y, groups = make_memorisable()
    folds = make_folds(y, groups)
    outer, inner, fits = [], [], []
    real_outer, real_inner, real_fit = (
        probes_cv.outer_splits,
        probes_cv.inner_splits,
        probes_cv.fit_probe_pipeline,
    )

    def spy_outer(folds_N, groups_N=None):
        for split in real_outer(folds_N, groups_N):
            outer.append(split)
            yield split

    def spy_inner(y_N, groups_N=None, **kw):
        splits = real_inner(y_N, groups_N, **kw)
        inner.append((groups_N, splits))
        return splits

    def spy_fit(X_ND, y_N, **kw):
        fits.append(kw["groups_N"])
        return real_fit(X_ND, y_N, **kw)

    monkeypatch.setattr(probes_suite, "outer_splits", spy_outer)
    monkeypatch.setattr(probes_cv, "inner_splits", spy_inner)
    monkeypatch.setattr(probes_suite, "fit_probe_pipeline", spy_fit)
    evaluate_probe(X, y, folds, settings=FAST, groups_N=groups)

    assert len(outer) == 5
    assert np.array_equal(np.sort(np.concatenate([te for _, _, te in outer])), np.arange(y.size))
    for k, tr, te in outer:
        assert set(groups[tr]).isdisjoint(groups[te])
        assert (folds[te] == k).all() and (folds[tr] != k).all()
    assert len(fits) == len(FAST.seeds) * 5 and len(inner) == len(fits)
    train_group_sets = [set(groups[tr]) for _, tr, _ in outer]
    for fit_groups in fits:  # every fit sees exactly the groups of one outer training set
        assert set(fit_groups) in train_group_sets
    for inner_groups, splits in inner:
        assert len(splits) == FAST.inner_folds
        for tr, va in splits:
            assert set(inner_groups[tr]).isdisjoint(inner_groups[va])


def test_outer_and_inner_split_helpers():
    X, y, groups, folds = make_binary(group_size=4)
    for _, tr, te in outer_splits(folds, groups):
        assert set(groups[tr]).isdisjoint(groups[te])
        for seed in (0, 1):
            for itr, iva in inner_splits(y[tr], groups[tr], n_splits=3, seed=seed):
                assert set(groups[tr][itr]).isdisjoint(groups[tr][iva])
    with pytest.raises(ValueError, match="at least 2 groups per class"):
        inner_splits(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), n_splits=3, seed=0)


def test_scaler_is_fit_on_training_rows_only(monkeypatch):
    X, y, groups, folds = make_binary()
    outlier = 7
    X[outlier, 3] = 1e9
    fitted = []
    real_fit = probes_cv.fit_probe_pipeline

    def spy_fit(X_ND, y_N, **kw):
        pipe, info = real_fit(X_ND, y_N, **kw)
        fitted.append((X_ND.copy(), pipe))
        return pipe, info

    monkeypatch.setattr(probes_suite, "fit_probe_pipeline", spy_fit)
    evaluate_probe(X, y, folds, settings=FAST, groups_N=groups)
    X = X.astype(probes_cv.FEATURE_DTYPE)  # what the probes fit on
    train_means = {k: X[folds != k].astype(np.float64).mean(axis=0) for k in range(5)}
    clean = 0
    for X_fit, pipe in fitted:
        k = next(
            k
            for k in range(5)
            if X_fit.shape[0] == (folds != k).sum() and np.array_equal(X_fit, X[folds != k])
        )
        np.testing.assert_allclose(pipe.named_steps["scaler"].mean_, train_means[k], rtol=1e-6)
        if k == folds[outlier]:  # the outlier was a test row: the scaler never saw it
            clean += 1
            assert abs(pipe.named_steps["scaler"].mean_[3]) < 1e3
    assert clean == len(FAST.seeds)


def test_inner_cv_matches_grid_search_on_the_rows_scaled_once():
    """Warm-started inner CV scores C like GridSearchCV over logreg on the given rows scaled once (the scaler is
    fit on every given row, labels unseen; inner folds are row subsets), and the pipeline holds that scaler."""
    X, y, groups, _ = make_binary(separable=False, signal=0.7)
    pipe, info = fit_probe_pipeline(X, y, settings=FAST, seed=0, groups_N=groups)
    X_s = StandardScaler().fit_transform(X.astype(np.float32))
    grid = GridSearchCV(
        LogisticRegression(max_iter=2000),
        {"C": list(FAST.c_grid)},
        scoring="neg_log_loss",
        cv=inner_splits(y, groups, n_splits=3, seed=0),
    ).fit(X_s, y)
    expected = dict(zip(grid.cv_results_["param_C"], grid.cv_results_["mean_test_score"], strict=True))
    for C, score in info["inner_scores"].items():
        np.testing.assert_allclose(score, expected[C], rtol=1e-3)  # warm starts: same optimum, own stop
    assert info["C"] == grid.best_params_["C"]
    np.testing.assert_allclose(pipe.named_steps["scaler"].mean_, X.astype(np.float64).mean(axis=0), rtol=1e-5)


# ------------------------------------------------------------------------------------------- cross-space
def test_cross_space_width_mismatch_names_both_widths():
    X, y, _, folds = make_binary()
    with pytest.raises(ValueError, match="X_train_ND has 20 dims, X_test_ND has 12"):
        evaluate_probe(X, y, folds, X_test_ND=X[:, :12], settings=FAST)
    with pytest.raises(ValueError, match="gemma has 20 dims, paligemma has 12"):
        evaluate_probe(X, y, folds, X_test_ND=X[:, :12], settings=FAST, names=("gemma", "paligemma"))


def test_cross_space_trains_on_one_space_and_tests_on_the_other():
    X, y, groups, folds = make_binary()
    rows = evaluate_probe(X, y, folds, X_test_ND=X.copy(), settings=FAST, groups_N=groups, report_within=True)
    assert set(rows.test_space) == {"same", "other", "other-recentred"}
    assert accuracy(rows, space="other") == accuracy(rows, space="same") >= 0.98
    flipped = X.copy()
    flipped[:, 0] *= -1  # the other space encodes the label with the opposite sign
    rows = evaluate_probe(X, y, folds, X_test_ND=flipped, settings=FAST, groups_N=groups)
    assert set(rows.test_space) == {"other", "other-recentred"}
    assert accuracy(rows, space="other") < 0.05


# --------------------------------------------------------------------------------------------- summaries
def test_summarize_intervals_contain_the_mean():
    settings = ProbeSettings(c_grid=(0.01, 0.1, 1.0), seeds=(0, 1, 2), control=True)
    # A real but imperfect signal, so that the intervals have width.
    X, y, groups, folds = make_binary(separable=False, signal=0.8, seed=3)
    summary = summarize(run_probe_suite(X, y, folds, settings=settings, groups_N=groups))
    for column in ("probe", "metric", "mean", "ci_low", "ci_high", "n", "majority_accuracy", "control_mean"):
        assert column in summary
    assert (summary.ci_low <= summary["mean"]).all() and (summary["mean"] <= summary.ci_high).all()
    logreg = summary[(summary.probe == "logreg") & (summary.metric == "accuracy")].iloc[0]
    # 3 seeds x 5 stored folds: 5 distinct fold-runs (seeds only reshuffle the inner CV), 15 scores behind them
    assert logreg.n == 5 and logreg.n_scores == 15 and logreg.ci_low < logreg["mean"] < logreg.ci_high
    assert 0.7 < logreg["mean"] and abs(logreg.control_mean - 0.5) < 0.15
    assert abs(logreg.majority_accuracy - 0.5) < 0.15
    assert summary.interval.str.startswith(probes_summary.INTERVAL_METHOD).all()


def test_learning_curve_and_mlp_rows():
    settings = ProbeSettings(
        c_grid=(0.1, 1.0), seeds=(0,), control=False, mlp=True, mlp_hidden=8, train_fractions=(0.25, 1.0)
    )
    X, y, groups, folds = make_binary()
    rows = run_probe_suite(X, y, folds, settings=settings, groups_N=groups)
    assert set(rows.probe) == {"logreg", "mlp", "majority"}
    logreg = rows[(rows.probe == "logreg") & (rows.metric == "accuracy")]
    assert logreg.groupby("train_fraction").size().to_dict() == {0.25: 5, 1.0: 5}  # 1.0 not refit
    small = logreg[logreg.train_fraction == 0.25].set_index("fold").n_train
    full = logreg[logreg.train_fraction == 1.0].set_index("fold").n_train
    assert (small < 0.4 * full).all() and (small > 0.15 * full).all()
    assert accuracy(rows, "mlp") >= 0.9


def test_parallel_jobs_give_identical_rows():
    X, y, groups, folds = make_binary()
    settings = ProbeSettings(c_grid=(0.1, 1.0), seeds=(0, 1))
    serial = evaluate_probe(X, y, folds, settings=settings, groups_N=groups, kind="control")
    parallel = evaluate_probe(
        X, y, folds, settings=dataclasses.replace(settings, n_jobs=2), groups_N=groups, kind="control"
    )
    pd.testing.assert_frame_equal(serial, parallel)


# ------------------------------------------------------------------------------------------- final probe
def test_saved_probe_reloads_and_reproduces_predictions(tmp_path):
    X, y, groups, _ = make_binary(separable=False, signal=1.0)
    probe = fit_final_probe(X, y, settings=FAST, groups_N=groups)
    pipe, _ = fit_probe_pipeline(X, y, settings=FAST, seed=FAST.seeds[0], groups_N=groups)
    # the pipeline was fit on float32 features (probes_cv.FEATURE_DTYPE); the saved probe scores in float64
    np.testing.assert_allclose(probe.decision_function(X), pipe.decision_function(X), rtol=1e-5, atol=1e-5)
    assert np.array_equal(probe.predict(X), pipe.predict(X))

    weights, sidecar = probe.save(tmp_path / "layer-3.probe")
    assert weights.name == "layer-3.probe.safetensors" and sidecar.name == "layer-3.probe.json"
    info = json.loads(sidecar.read_text())
    assert info["C"] == probe.C and "provenance" in info and info["meta"]["grouped"] is True
    loaded = FittedProbe.load(tmp_path / "layer-3.probe")
    assert np.array_equal(loaded.predict(X), probe.predict(X))
    np.testing.assert_allclose(loaded.decision_function(X), probe.decision_function(X), rtol=0, atol=0)
    assert loaded.C == probe.C and np.array_equal(loaded.classes_K, probe.classes_K)
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob(".*tmp*"))


def test_direction_lives_in_the_original_feature_space():
    X, y, groups, _ = make_binary()
    probe = fit_final_probe(X, y, settings=FAST, groups_N=groups)
    direction = probe.direction_D
    np.testing.assert_allclose(np.linalg.norm(direction), 1.0)
    # Moving a row along the direction raises its score in proportion to the distance moved.
    step = probe.decision_function(X[:1] + direction) - probe.decision_function(X[:1])
    w = probe.coef_KD[0] / probe.scale_D
    np.testing.assert_allclose(step, np.linalg.norm(w), rtol=1e-9)
    assert direction[0] > 0.9  # feature 0 carries the label, pointing at class 1
    # Rescaling and shifting the features leaves the standardised fit, hence the direction, unchanged.
    rescaled = fit_final_probe(3.0 * X + 5.0, y, settings=FAST, groups_N=groups)
    assert direction_cosine(probe, rescaled) == pytest.approx(1.0, abs=1e-6)
    other = fit_final_probe(X[:, :10], y, settings=FAST, groups_N=groups)
    with pytest.raises(ValueError, match="probe_a has 20 dims, probe_b has 10"):
        direction_cosine(probe, other)


# ---------------------------------------------------------------------------------------- fit once, reuse
def _logreg(rows: pd.DataFrame, space: str) -> pd.DataFrame:
    sel = rows[(rows.probe == "logreg") & (rows.test_space == space)]
    return sel.drop(columns="test_space").sort_values(["seed", "fold", "metric"]).reset_index(drop=True)


def test_one_fit_scored_in_other_spaces_equals_separate_fits():
    """Cross-model / cross-modal rows from the within-model fit equal a separate cross-space suite, and the saved
    fold probes reproduce them, also on unpaired rows (another order, fewer rows)."""
    settings = ProbeSettings(c_grid=(0.1, 1.0), seeds=(0, 1), control=True)
    X, y, groups, folds = make_binary(separable=False, signal=1.0, seed=4)
    X_b = X + np.random.default_rng(1).normal(0, 5, size=X.shape)  # "another model": same rows, noisier
    rows, fold_probes = probes_suite.fit_probe_suite(
        X,
        y,
        folds,
        settings=settings,
        groups_N=groups,
        other_spaces=[probes_suite.EvalSpace("b", X_b, y, folds, groups)],
    )
    separate = run_probe_suite(X, y, folds, settings=settings, groups_N=groups, X_test_ND=X_b)
    within = run_probe_suite(X, y, folds, settings=settings, groups_N=groups)
    pd.testing.assert_frame_equal(_logreg(rows, "b"), _logreg(separate, "other"))
    pd.testing.assert_frame_equal(_logreg(rows, "same"), _logreg(within, "same"))
    for probe in ("control", "majority"):  # the chance references come along for every space
        got = rows[(rows.probe == probe) & (rows.test_space == "b")]["value"].to_numpy()
        want = separate[(separate.probe == probe) & (separate.test_space == "other")]["value"].to_numpy()
        np.testing.assert_allclose(got, want)
    assert len(fold_probes) == 2 * 5
    pd.testing.assert_frame_equal(
        _logreg(fold_probes.score(X_b, y, folds, space="b"), "b"), _logreg(rows, "b"), check_exact=False
    )
    # unpaired rows: the other space's rows in another order and without fold 0's first rows
    order = np.random.default_rng(2).permutation(len(y))[10:]
    shuffled = probes_suite.fit_probe_suite(
        X,
        y,
        folds,
        settings=settings,
        groups_N=groups,
        other_spaces=[probes_suite.EvalSpace("b", X_b[order], y[order], folds[order], groups[order])],
    )[0]
    direct = fold_probes.score(X_b[order], y[order], folds[order], space="b")
    pd.testing.assert_frame_equal(_logreg(shuffled, "b"), _logreg(direct, "b"), check_exact=False)


def test_other_space_sharing_a_group_across_the_split_raises():
    X, y, groups, folds = make_binary()
    bad_folds = folds.copy()
    bad_folds[0] = (folds[0] + 1) % 5  # row 0's group is now tested in a fold whose training rows contain it
    space = probes_suite.EvalSpace("paligemma image", X, y, bad_folds, groups)
    with pytest.raises(
        ValueError, match="in X_train_ND's training rows of fold .* and in paligemma image's test"
    ):
        evaluate_probe(X, y, folds, settings=FAST, groups_N=groups, other_spaces=[space])


def test_fold_probes_save_and_reload_exactly(tmp_path):
    X, y, groups, folds = make_binary(separable=False, signal=1.0)
    y3 = np.where(X[:, 1] > np.median(X[:, 1]), 2, y)  # three classes
    settings = ProbeSettings(c_grid=(0.1, 1.0), seeds=(0,), control=False)
    for labels in (y, y3):
        _, fold_probes = probes_suite.fit_probe_suite(X, labels, folds, settings=settings, groups_N=groups)
        fold_probes.save(tmp_path / "m.text.folds")
        loaded = probes_saved.FoldProbes.load(tmp_path / "m.text.folds")
        pd.testing.assert_frame_equal(
            loaded.score(X, labels, folds, space="same"), fold_probes.score(X, labels, folds, space="same")
        )
        assert np.array_equal(loaded.fold_F, np.arange(5)) and loaded.n_features == X.shape[1]
    assert not list(tmp_path.glob("*.pkl"))


def test_numpy_metrics_match_scikit_learn():
    from sklearn.metrics import f1_score, log_loss, roc_auc_score

    rng = np.random.default_rng(0)
    for k in (2, 3, 5):
        y_true = rng.integers(0, k, size=60)
        y_pred = np.where(rng.random(60) < 0.6, y_true, rng.integers(0, k + 1, size=60))  # a label never true
        assert probes_cv._macro_f1(y_true, y_pred) == pytest.approx(
            f1_score(y_true, y_pred, average="macro", zero_division=0)
        )
        proba = rng.dirichlet(np.ones(k), size=60)
        assert probes_cv._log_loss(y_true, proba, np.arange(k)) == pytest.approx(
            log_loss(y_true, proba, labels=np.arange(k))
        )
    positive = rng.random(50) < 0.4
    score = np.round(rng.normal(size=50) + positive, 1)  # with ties
    assert probes_cv._auroc(positive, score) == pytest.approx(roc_auc_score(positive, score))


def test_a_constant_offset_fools_plain_transfer_but_not_the_recentred_score():
    """Two spaces that differ only by a constant offset (+10 on the label feature, ~7 of its standard deviations):
    the plain transfer predicts class 1 for every row, so its accuracy is each test fold's share of positives
    (~0.5) while AUROC (a ranking) is untouched; re-centring the target on its own training rows gives back the
    within-space scores exactly."""
    X, y, groups, folds = make_binary(seed=3)
    offset_D = np.zeros(X.shape[1])
    offset_D[0] = 10.0
    space = probes_suite.EvalSpace("shifted", X + offset_D, y, folds, groups)
    rows = evaluate_probe(X, y, folds, settings=FAST, groups_N=groups, other_spaces=[space])
    positives = {k: y[folds == k].mean() for k in range(5)}

    def per_fold(space_name, metric):
        sel = rows[(rows.test_space == space_name) & (rows.metric == metric)].sort_values(["seed", "fold"])
        return sel["fold"].to_numpy(), sel["value"].to_numpy()

    fold_ids, plain_acc = per_fold("shifted", "accuracy")
    np.testing.assert_allclose(plain_acc, [positives[k] for k in fold_ids])
    assert 0.4 < plain_acc.mean() < 0.6
    _, same_acc = per_fold("same", "accuracy")
    assert same_acc.mean() >= 0.98
    np.testing.assert_array_equal(per_fold("shifted-recentred", "accuracy")[1], same_acc)
    np.testing.assert_allclose(per_fold("shifted", "auroc")[1], per_fold("same", "auroc")[1])
    np.testing.assert_allclose(per_fold("shifted-recentred", "auroc")[1], per_fold("same", "auroc")[1])
    # the paired form (X_test_ND) has the same re-centred copy
    paired = evaluate_probe(X, y, folds, X_test_ND=X + offset_D, settings=FAST, groups_N=groups)
    assert accuracy(paired, space="other") < 0.6 and accuracy(paired, space="other-recentred") >= 0.98
    with pytest.raises(ValueError, match="reserved"):
        evaluate_probe(
            X, y, folds, settings=FAST, other_spaces=[probes_suite.EvalSpace("x-recentred", X, y, folds)]
        )


@pytest.mark.parametrize("seed", range(30))
def test_inner_splits_equal_scikit_learns_stratified_group_kfold(seed):
    from sklearn.model_selection import StratifiedGroupKFold

    rng = np.random.default_rng(seed)
    n, k = (
        int(rng.integers(40, 400)),
        int(rng.integers(2, 12)),
    )  # < 8 classes: plain floats; 8 or more: scikit-learn's own
    n_splits = int(rng.choice([2, 3, 5]))
    groups = rng.integers(0, n // int(rng.integers(1, 4)), size=n)  # one row per group to several
    y = (groups * 7 + rng.integers(0, 2, size=n) * (seed % 2)) % k  # labels mostly shared within a group
    ours = inner_splits(y, groups, n_splits=n_splits, seed=seed)
    # inner_splits lowers the fold count to the rarest class's number of groups
    rarest = min(np.unique(groups[y == c]).size for c in np.unique(y))
    assert len(ours) == min(n_splits, rarest)
    reference = StratifiedGroupKFold(n_splits=len(ours), shuffle=True, random_state=seed).split(
        np.zeros((n, 1)), y, groups
    )
    for (tr, va), (tr_ref, va_ref) in zip(ours, reference, strict=True):
        np.testing.assert_array_equal(tr, tr_ref)
        np.testing.assert_array_equal(va, va_ref)
