"""The batched logistic solver agrees with scikit-learn's LogisticRegression and stops at a true optimum."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from repshift.probes.batched import fit_logistic_batched

#: Stated tolerance: at tol=1e-6 the batched float32 fit is within these of scikit-learn's float64 fit run to
#: tol=1e-10 (its optimum), on standardised-scale features.
PROBA_ATOL, COEF_ATOL, INTERCEPT_ATOL = 1e-3, 2e-3, 1e-2  # decision values: 3e-2 + 1% (C = 10, d > n)


def _problem(k: int, n: int = 240, d: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    rng.shuffle(y)
    X = rng.standard_normal((n, d)) + 0.8 * np.eye(k, d)[y] + 0.3 * rng.standard_normal((1, d))
    return X.astype(np.float32), y


def _reference(X, y, C, rows=None):
    rows = np.ones(y.size, bool) if rows is None else rows
    return LogisticRegression(C=C, tol=1e-10, max_iter=20000).fit(X[rows].astype(np.float64), y[rows])


@pytest.mark.parametrize(("k", "d"), [(2, 20), (3, 20), (3, 400), (2, 400), (5, 400)])
def test_agrees_with_sklearn_over_c_permutations_and_row_weights(k, d):
    # d = 20 < n = 240: basis from X^T X; d = 400 > n: from X X^T (the row space), mapped back to d coefficients
    X, y = _problem(k, d=d)
    rng = np.random.default_rng(1)
    C = np.array([0.003, 0.1, 1.0, 10.0, 0.1, 1.0])
    subset = rng.random(y.size) < 0.7
    labels = np.stack([y, y, y, y, rng.permutation(y), y], axis=1)
    weights = np.ones((y.size, C.size))
    weights[~subset, 5] = 0  # problem 5: the subset's rows only, through 0/1 weights on the shared X
    fit = fit_logistic_batched(X, labels, C, weights=weights, tol=1e-6)
    assert fit.converged_B.all() and (fit.grad_B <= 1e-6).all()
    proba = fit.predict_proba(X)
    for b in range(C.size):
        ref = _reference(X, labels[:, b], C[b], weights[:, b] > 0)
        np.testing.assert_allclose(proba[:, b], ref.predict_proba(X), atol=PROBA_ATOL, rtol=0)
        np.testing.assert_allclose(fit.coef_BKD[b], ref.coef_, atol=COEF_ATOL, rtol=0)
        # intercepts of the softmax are defined up to a shared constant
        centre = (lambda v: v - v.mean()) if k > 2 else (lambda v: v)
        np.testing.assert_allclose(
            centre(fit.intercept_BK[b]), centre(ref.intercept_), atol=INTERCEPT_ATOL, rtol=0
        )
        model = fit.model(b)
        np.testing.assert_array_equal(model.predict(X), ref.predict(X))
        np.testing.assert_allclose(model.decision_function(X), ref.decision_function(X), atol=3e-2, rtol=1e-2)


def test_default_tolerance_is_sklearns_stopping_rule():
    # at tol=1e-4 (scikit-learn's default) both stop near the optimum: predictions agree, probabilities closely
    X, y = _problem(3, seed=2)
    fit = fit_logistic_batched(X, y, [0.1, 1.0])
    for b, C in enumerate([0.1, 1.0]):
        ref = LogisticRegression(C=C).fit(X, y)
        assert fit.grad_B[b] <= 1e-4
        np.testing.assert_allclose(fit.predict_proba(X)[:, b], ref.predict_proba(X), atol=1e-2, rtol=0)
        assert np.mean(fit.model(b).predict(X) == ref.predict(X)) >= 0.99


def test_one_feature_optimum_by_hand():
    # d = 1, binary: the optimum has zero gradient of C * sum log(1 + exp(-s_i (w x_i + c))) + w^2 / 2,
    # written out here by hand (s_i = +-1), independent of the solver's own gradient code.
    x = np.array([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 0.2, -0.3])
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    C = 0.7
    fit = fit_logistic_batched(x[:, None], y, C, tol=1e-7)
    w, c = float(fit.coef_BKD[0, 0, 0]), float(fit.intercept_BK[0, 0])
    p = 1 / (1 + np.exp(-(w * x + c)))
    grad_w = C * np.sum((p - y) * x) + w
    grad_c = C * np.sum(p - y)
    assert abs(grad_w) < 1e-5 and abs(grad_c) < 1e-5
    assert w > 0  # larger x, class 1

    # and a perturbed solution is worse: the objective is at a minimum, not a saddle or a stall
    def objective(w_, c_):
        return C * np.sum(np.logaddexp(0, -(2 * y - 1) * (w_ * x + c_))) + 0.5 * w_**2

    assert objective(w, c) < min(objective(w + 1e-2, c), objective(w - 1e-2, c), objective(w, c + 1e-2))


def test_row_weights_equal_fitting_on_the_subset():
    X, y = _problem(3, seed=3)
    rows = np.arange(y.size) % 4 != 0
    weighted = fit_logistic_batched(X, y, 1.0, weights=rows.astype(float), tol=1e-6)
    subset = fit_logistic_batched(X[rows], y[rows], 1.0, tol=1e-6)
    np.testing.assert_allclose(weighted.coef_BKD, subset.coef_BKD, atol=1e-4, rtol=0)


def test_max_iter_reports_problems_not_converged(caplog):
    X, y = _problem(3)
    with caplog.at_level("WARNING"):
        fit = fit_logistic_batched(X, y, [0.01, 100.0], max_iter=2, tol=1e-8)
    assert not fit.converged_B.all() and (fit.n_iter_B <= 2).all()
    assert "stopped above tol" in caplog.text


def test_bad_inputs_are_named():
    X, y = _problem(2)
    with pytest.raises(ValueError, match="single class"):
        fit_logistic_batched(X, np.zeros(y.size, int), 1.0)
    with pytest.raises(ValueError, match="C must be positive"):
        fit_logistic_batched(X, y, [1.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        fit_logistic_batched(X, y[:-1], 1.0)


# ------------------------------------------------------------------------------------------ nested CV engine
def _suite_data(n=240, d=60, k=3, seed=0):
    from repshift.formats.manifest import assign_folds, repeat_seed

    rng = np.random.default_rng(seed)
    groups = np.arange(n) // 2
    y = groups % k
    X = rng.normal(size=(n, d)) + 0.25 * rng.normal(size=(1, d)) + 0.6 * np.eye(k, d)[y]
    folds = np.stack([assign_folds(y, groups, n_folds=4, seed=repeat_seed(seed, r)) for r in range(2)])
    return X.astype(np.float32), y, groups, folds


def test_batched_engine_runs_the_suite_like_scikit_learn():
    """From batched_min_size on, a fold-run's probes (every seed's inner CV over the C grid, the refits) and its
    null are fit on the batched solver; the rows equal scikit-learn's engine: same C chosen per (seed, fold-run)
    and same inner scores within the solvers' tolerance, accuracies within one flipped test row."""
    from repshift.probes.cv import ProbeSettings
    from repshift.probes.suite import fit_probe_suite

    X, y, groups, folds = _suite_data()
    settings = ProbeSettings(c_grid=(0.001, 0.03, 1.0), seeds=(0, 1), repeats=2, permutations=4)

    def suite(min_size):
        rows, probes = fit_probe_suite(
            X, y, folds, settings=dataclasses.replace(settings, batched_min_size=min_size), groups_N=groups
        )
        rows = rows[rows.metric == "accuracy"].sort_values(["probe", "seed", "repeat", "fold", "test_space"])
        return rows.reset_index(drop=True), probes

    (sk, sk_probes), (bt, bt_probes) = suite(10**9), suite(0)
    assert len(sk) == len(bt) and set(sk.probe) == {"logreg", "permutation", "majority"}
    pd.testing.assert_frame_equal(sk.drop(columns="value"), bt.drop(columns="value"))  # C, n_train, ... too
    assert len(set(sk.loc[sk.probe == "logreg", "C"])) > 1  # inner CV did choose, differently per fold-run
    test_rows = int(sk.n_test.min())
    assert (sk.value - bt.value).abs().max() <= 1.01 / test_rows
    np.testing.assert_allclose(bt_probes.coef_FKD, sk_probes.coef_FKD, atol=2e-3, rtol=0)
    np.testing.assert_allclose(bt_probes.mean_FD, sk_probes.mean_FD, rtol=1e-6)


def test_batched_engine_inner_scores_match_scikit_learn():
    from repshift.probes.cv import ProbeSettings, fit_probe_pipeline, fit_probe_pipelines_batched

    X, y, groups, folds = _suite_data(seed=1)
    tr = folds[0] != 0
    settings = ProbeSettings(c_grid=(0.001, 0.01, 0.1, 1.0), seeds=(0, 1, 2))
    fits, null = fit_probe_pipelines_batched(
        X[tr], y[tr], settings=settings, seeds=(0, 1, 2), groups_N=groups[tr]
    )
    assert null is None
    for seed, (pipe, info) in zip((0, 1, 2), fits, strict=True):
        ref_pipe, ref = fit_probe_pipeline(X[tr], y[tr], settings=settings, seed=seed, groups_N=groups[tr])
        assert info["C"] == ref["C"]
        for C, score in ref["inner_scores"].items():
            # both stop at scikit-learn's tol=1e-4: an over-fit C's log loss moves most (here <= 1%)
            assert info["inner_scores"][C] == pytest.approx(score, rel=1e-2)
        np.testing.assert_allclose(
            pipe.predict_proba(X[~tr]), ref_pipe.predict_proba(X[~tr]), atol=PROBA_ATOL, rtol=0
        )


def test_sparse_codes_basis_and_classifier_match_dense_and_scikit_learn():
    """Sparse non-negative codes (the SAE-feature classifier's input): the basis from the sparse Gram matrix
    equals the dense one, and fit_classifier on the batched solver picks scikit-learn's C and predictions."""
    from scipy import sparse

    from repshift.probes.batched import basis
    from repshift.probes.cv import ProbeSettings
    from repshift.sae.class_features import fit_classifier

    rng = np.random.default_rng(5)
    n, d, k = 150, 400, 5
    y = np.arange(n) % k
    X = sparse.random(n, d, density=0.05, random_state=5, format="csr") * 3.0
    X = (X + sparse.csr_matrix((np.full(n, 2.0), (np.arange(n), y * 11)), shape=(n, d))).tocsr()
    dense = basis(X.toarray())
    from_sparse = basis(X)
    np.testing.assert_allclose(
        from_sparse.lam_R.numpy(), dense.lam_R.numpy(), rtol=1e-6
    )  # dense: via float32
    np.testing.assert_allclose(from_sparse.mean_D.numpy(), X.toarray().mean(axis=0), rtol=1e-10)

    settings = ProbeSettings(c_grid=(0.01, 0.1, 1.0), seeds=(0,))
    ref_pipe, ref_C, _ = fit_classifier(X, y, settings=settings, seed=0, scaling="global")
    pipe, C, n_conv = fit_classifier(
        X, y, settings=dataclasses.replace(settings, batched_min_size=0), seed=0, scaling="global"
    )
    assert C == ref_C and n_conv == 0
    test = sparse.random(40, d, density=0.05, random_state=rng.integers(1 << 31), format="csr")
    np.testing.assert_allclose(
        pipe.predict_proba(test), ref_pipe.predict_proba(test), atol=PROBA_ATOL, rtol=0
    )
    assert np.mean(pipe.predict(X) == ref_pipe.predict(X)) >= 0.99


def test_many_classes_on_sparse_codes_converge_at_large_c():
    # 30 classes on sparse non-negative codes (5% active, a class-marking latent): at C = 10 every row ends up
    # fitted confidently, so the intercept's refreshed curvature tends to 0. Without the preconditioner's
    # intercept floor this fit stalled at max_iter (300 iterations, gradient stuck); with it, ~30 iterations.
    from scipy import sparse

    rng = np.random.default_rng(0)
    n, d, k = 300, 1000, 30
    y = np.arange(n) % k
    X = sparse.random(n, d, density=0.05, random_state=0, format="csr", dtype=np.float32)
    X.data = rng.exponential(1.0, X.data.size).astype(np.float32)
    X = (X + sparse.csr_matrix((np.full(n, 3.0, np.float32), (np.arange(n), y * 7)), shape=(n, d))).toarray()
    X /= np.sqrt(np.mean(X[X != 0] ** 2))
    fit = fit_logistic_batched(X, y, [1.0, 10.0], tol=3e-6, max_iter=300)
    assert fit.converged_B.all(), fit.n_iter_B
    assert fit.n_iter_B.max() < 100
    ref = LogisticRegression(C=10.0, tol=1e-8, max_iter=5000).fit(X.astype(np.float64), y)
    np.testing.assert_allclose(fit.predict_proba(X)[:, 1], ref.predict_proba(X), atol=PROBA_ATOL, rtol=0)
