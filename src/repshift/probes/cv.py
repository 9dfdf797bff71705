"""The one nested-CV engine: settings, grouped outer/inner splits, classifier pipelines, metrics."""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from scipy import sparse, stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

logger = logging.getLogger(__name__)


#: Probe kinds accepted by :func:`evaluate_probe`.
KINDS = ("logreg", "control", "mlp")


#: Inner-CV selection scores (higher is better after sign flip).
INNER_METRICS = ("log_loss", "accuracy")


#: Probes fit in float32: activations are stored in float16 or bfloat16, so float64 adds no information, and
#: scikit-learn's lbfgs keeps float32 input in float32 (twice as fast: the fits are memory-bandwidth bound).
#: Scaler statistics are accumulated in float64 by scikit-learn and kept in float64 in saved probes.
FEATURE_DTYPE = np.float32


#: Default training-matrix size (rows x dims) from which logistic probes are fit by the batched solver
#: (:func:`fit_probe_pipelines_batched`; setting ``batched_min_size``); below it by scikit-learn one fit at a time
#: (as fast on small problems, and the job never imports torch).
BATCHED_MIN_SIZE = 200_000


# --------------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class ProbeSettings:
    """Probe method settings shared by all tasks (config key ``probes.settings``)."""

    c_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    inner_folds: int = 3
    seeds: tuple[int, ...] = (0, 1, 2)
    max_iter: int = 2000
    mlp: bool = False
    mlp_hidden: int = 64
    control: bool = True
    train_fractions: tuple[float, ...] = ()
    #: layers (block outputs) at which train_probe runs the learning curve; empty: every layer
    curve_layers: tuple[int, ...] = ()
    n_jobs: int = 1
    inner_metric: str = "log_loss"
    #: outer-CV repeats used (each its own stored fold column); 1: the ``fold`` column only
    repeats: int = 1
    #: label permutations of the permutation null (0: none; see repshift.probes.suite)
    permutations: int = 0
    #: ``fixed``: null fits reuse the fold's scaler and real-label C; ``inner``: inner CV per permutation
    permutation_c: str = "fixed"
    #: training-matrix entries (rows x dims) from which logistic fits go to the batched solver
    batched_min_size: int = BATCHED_MIN_SIZE

    def __post_init__(self) -> None:
        for name in ("c_grid", "seeds", "train_fractions", "curve_layers"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "c_grid", tuple(float(c) for c in self.c_grid))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "train_fractions", tuple(float(f) for f in self.train_fractions))
        object.__setattr__(self, "curve_layers", tuple(int(x) for x in self.curve_layers))
        if not self.c_grid or any(not (c > 0 and math.isfinite(c)) for c in self.c_grid):
            raise ValueError(f"probe c_grid must be a non-empty list of positive numbers, got {self.c_grid}")
        if self.inner_folds < 2:
            raise ValueError(f"probe inner_folds must be >= 2, got {self.inner_folds}")
        if not self.seeds:
            raise ValueError("probe seeds must list at least one seed")
        if self.max_iter < 1:
            raise ValueError(f"probe max_iter must be >= 1, got {self.max_iter}")
        if self.mlp_hidden < 1:
            raise ValueError(f"probe mlp_hidden must be >= 1, got {self.mlp_hidden}")
        bad = [f for f in self.train_fractions if not 0 < f <= 1]
        if bad:
            raise ValueError(f"probe train_fractions must lie in (0, 1], got {bad}")
        if self.n_jobs == 0:
            raise ValueError("probe n_jobs must be a positive number of workers (or -1 for all cores), got 0")
        if self.repeats < 1 or self.permutations < 0:
            raise ValueError(
                f"probe repeats must be >= 1 and permutations >= 0, got {self.repeats} and {self.permutations}"
            )
        if self.batched_min_size < 0:
            raise ValueError(f"probe batched_min_size must be >= 0, got {self.batched_min_size}")
        if self.permutation_c not in ("fixed", "inner"):
            raise ValueError(f"probe permutation_c must be 'fixed' or 'inner', got {self.permutation_c!r}")
        if self.inner_metric not in INNER_METRICS:
            raise ValueError(f"probe inner_metric {self.inner_metric!r} unknown; use one of {INNER_METRICS}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProbeSettings:
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(
                f"unknown probe setting(s) {', '.join(map(repr, unknown))}; known settings: {known}"
            )
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# --------------------------------------------------------------------------------------------- input checks
def check_same_width(X_a: np.ndarray, X_b: np.ndarray, *, name_a: str, name_b: str) -> None:
    """Raise unless the two arrays have the same last dimension (feature width)."""
    d_a, d_b = np.shape(X_a)[-1], np.shape(X_b)[-1]
    if d_a != d_b:
        raise ValueError(
            f"cannot probe across spaces of different widths: {name_a} has {d_a} dims, {name_b} has {d_b}"
        )


def _as_features(X_ND: Any, name: str) -> np.ndarray:
    X = np.asarray(X_ND, dtype=FEATURE_DTYPE)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (rows, features) array, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError(f"{name} contains NaN or inf values; fix the features before probing")
    return X


def _as_vector(v_N: Any, n: int, name: str) -> np.ndarray:
    v = np.asarray(v_N)
    if v.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the features, got {v.shape}")
    return v


def _check_folds(folds_N: np.ndarray, groups_N: np.ndarray | None) -> np.ndarray:
    folds = np.asarray(folds_N)
    if not np.issubdtype(folds.dtype, np.integer):
        raise ValueError(f"folds_N must hold integer fold ids, got dtype {folds.dtype}")
    if folds.size and folds.min() < 0:
        raise ValueError(f"folds_N must hold fold ids >= 0, got {folds.min()}")
    if np.unique(folds).size < 2:
        raise ValueError("folds_N must assign rows to at least 2 folds for cross-validation")
    if groups_N is not None:
        per_group = pd.Series(folds).groupby(np.asarray(groups_N)).nunique()
        split = per_group[per_group > 1]
        if len(split):
            raise ValueError(
                f"{len(split)} group(s) span more than one fold (e.g. group {split.index[0]!r}); "
                "folds must be grouped by base image so that no group is on both sides of a split"
            )
    return folds


# ------------------------------------------------------------------------------------------------- splits
def outer_splits(
    folds_N: np.ndarray, groups_N: np.ndarray | None = None
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(fold, train_idx, test_idx)`` for the stored fold assignment (fold k = test, the rest = train).

    With ``groups_N`` the assignment is checked first: a group spanning two folds raises ``ValueError``.
    """
    folds = _check_folds(folds_N, groups_N)
    for k in np.unique(folds):
        yield int(k), np.flatnonzero(folds != k), np.flatnonzero(folds == k)


def inner_splits(
    y_N: np.ndarray, groups_N: np.ndarray | None = None, *, n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified (and, with ``groups_N``, grouped) inner CV splits, shuffled by ``seed``.

    ``n_splits`` is lowered to the number of groups (rows without groups) of the rarest class so that every
    class can appear in every inner training set; fewer than 2 raises ``ValueError``.
    """
    y = np.asarray(y_N)
    if groups_N is None:
        per_class = int(np.unique(y, return_counts=True)[1].min())
    else:
        per_class = int(pd.Series(np.asarray(groups_N)).groupby(y).nunique().min())
    k = min(n_splits, per_class)
    if k < 2:
        unit = "groups" if groups_N is not None else "rows"
        raise ValueError(
            f"inner cross-validation needs at least 2 {unit} per class, the rarest class has {per_class}; "
            "use more data (or a larger train_fraction)"
        )
    if k < n_splits:
        logger.debug("inner CV: %d folds requested, %d possible with the rarest class", n_splits, k)
    dummy = np.zeros((len(y), 1))
    if groups_N is None:
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        return list(cv.split(dummy, y))
    cv_g = _StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(cv_g.split(dummy, y, np.asarray(groups_N)))


class _StratifiedGroupKFold(StratifiedGroupKFold):
    """scikit-learn's ``StratifiedGroupKFold``, its per-group fold choice in plain floats (under 8 classes and
    folds, where numpy adds left to right as ``sum()`` does; otherwise the original).

    Hand-written because the original scores each candidate fold with separate numpy calls: 0.15 s per split of
    1,600 groups. Same arithmetic and tie-breaking, so the same folds (``tests/unit/probes/test_probes.py``
    compares them on random inputs)."""

    def _find_best_fold(self, y_counts_per_fold, y_cnt, group_y_counts):
        F, K = y_counts_per_fold.shape
        if K >= 8 or F >= 8:  # numpy adds 8 or more numbers pairwise: the original keeps its order
            return super()._find_best_fold(y_counts_per_fold, y_cnt, group_y_counts)
        counts, total, g = y_counts_per_fold.tolist(), y_cnt.tolist(), group_y_counts.tolist()
        evals = []
        for i in range(F):  # trial i: the group in fold i
            std_sum = 0.0
            for c in range(K):
                col = [(counts[f][c] + g[c] if f == i else counts[f][c]) / total[c] for f in range(F)]
                mean = sum(col) / F
                std_sum += math.sqrt(sum((v - mean) * (v - mean) for v in col) / F)
            evals.append(std_sum / K)
        samples = [sum(row) for row in counts]
        best_fold, min_eval, min_samples = None, math.inf, math.inf
        for i in range(F):
            close = math.isfinite(min_eval) and abs(evals[i] - min_eval) <= 1e-8 + 1e-5 * abs(min_eval)
            if evals[i] < min_eval or (close and samples[i] < min_samples):  # np.isclose's defaults
                best_fold, min_eval, min_samples = i, evals[i], samples[i]
        return best_fold


# ---------------------------------------------------------------------------------------------- fitting
def _make_classifier(kind: str, C: float, seed: int, settings: ProbeSettings, *, warm_start: bool = False):
    if kind == "mlp":
        # sklearn's MLP penalises alpha/2 * ||W||^2 / n_samples on the mean loss, LogisticRegression
        # 1/(2C) * ||w||^2 on the summed loss: alpha = 1/C is the same strength.
        return MLPClassifier(
            hidden_layer_sizes=(settings.mlp_hidden,),
            alpha=1.0 / C,
            solver="lbfgs",
            max_iter=settings.max_iter,
            random_state=seed,
        )
    return LogisticRegression(C=C, solver="lbfgs", max_iter=settings.max_iter, warm_start=warm_start)


def _selection_score(
    clf: Any, X_ND: np.ndarray, y_N: np.ndarray, classes_K: np.ndarray, metric: str
) -> float:
    if metric == "accuracy":
        return float(np.mean(y_N == clf.predict(X_ND)))
    return -_log_loss(y_N, clf.predict_proba(X_ND), clf.classes_)


# Plain-numpy metrics: scikit-learn's versions validate their inputs on every call, which cost more than the fits
# on small problems (tests/unit/test_probes.py checks them against scikit-learn).
def _log_loss(y_N: np.ndarray, proba_NK: np.ndarray, classes_K: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels (probabilities clipped to [eps, 1 - eps])."""
    eps = np.finfo(proba_NK.dtype).eps
    p = proba_NK[np.arange(y_N.size), np.searchsorted(classes_K, y_N)]
    return float(-np.mean(np.log(np.clip(p, eps, 1 - eps))))


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the labels in y_true or y_pred (0 where undefined)."""
    f1 = []
    for label in np.union1d(y_true, y_pred):
        t, p = y_true == label, y_pred == label
        tp = np.sum(t & p)
        denominator = t.sum() + p.sum()
        f1.append(2.0 * tp / denominator if denominator else 0.0)
    return float(np.mean(f1))


def _auroc(positive_N: np.ndarray, score_N: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties)."""
    ranks = stats.rankdata(score_N)
    n_pos = int(positive_N.sum())
    n_neg = positive_N.size - n_pos
    return float((ranks[positive_N].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _inner_cv_scores(
    X_ND: np.ndarray,
    y_N: np.ndarray,
    groups_N: np.ndarray | None,
    *,
    settings: ProbeSettings,
    seed: int,
    kind: str,
) -> dict[float, float]:
    """Mean inner-CV score (higher is better) per C of the grid, ascending C, on features already scaled."""
    grid = sorted(settings.c_grid)
    if len(grid) == 1:
        return {grid[0]: math.nan}
    classes = np.unique(y_N)
    totals = np.zeros(len(grid))
    n_used = 0
    for tr, va in inner_splits(y_N, groups_N, n_splits=settings.inner_folds, seed=seed):
        if np.unique(y_N[tr]).size < classes.size:
            logger.debug("inner fold skipped: its training rows miss a class")
            continue
        X_tr, X_va = X_ND[tr], X_ND[va]
        clf = None
        for i, C in enumerate(grid):
            if kind == "mlp" or clf is None:
                # Logistic regression walks the path from strong to weak regularisation with warm starts.
                clf = _make_classifier(kind, C, seed, settings, warm_start=kind != "mlp")
            else:
                clf.set_params(C=C)
            clf.fit(X_tr, y_N[tr])
            totals[i] += _selection_score(clf, X_va, y_N[va], classes, settings.inner_metric)
        n_used += 1
    if n_used == 0:
        raise ValueError("no inner CV fold had every class in its training rows; cannot choose C")
    return dict(zip(grid, (totals / n_used).tolist(), strict=True))


def _best_C(scores: Mapping[float, float]) -> float:
    """The C of the best inner score (ascending C: ties go to the strongest regularisation; all NaN: the
    first)."""
    C_grid = np.array(list(scores))
    values = np.array(list(scores.values()))
    return float(C_grid[0] if np.isnan(values).all() else C_grid[int(np.nanargmax(values))])


def fit_probe_pipeline(
    X_ND: np.ndarray,
    y_N: np.ndarray,
    *,
    settings: ProbeSettings,
    seed: int,
    groups_N: np.ndarray | None = None,
    kind: str = "logreg",
    scaler: Callable[[], Any] = StandardScaler,
) -> tuple[Pipeline, dict[str, Any]]:
    """Fit the scaler on these rows, choose C by inner CV on them, then fit the classifier on all of them.

    The one nested-CV engine: label probes (dense pooled activations, ``StandardScaler``) and SAE-feature
    classification (sparse codes, its own scalers) both fit through it. Pass only training rows: everything here
    (scaler statistics included) is fit on what it is given. The scaler is fit once, on all the given rows, and
    the inner folds are row subsets of the scaled matrix: the scaler never sees a label, the held-out outer fold
    is never given, and every inner problem then shares one matrix (what lets
    :func:`fit_probe_pipelines_batched` solve them together). ``kind`` is ``logreg`` or ``mlp``; ``scaler``
    makes a fresh scikit-learn transformer (dense or sparse input). Returns the fitted pipeline (steps
    ``scaler``, ``clf``) and an info dict (``C``, ``inner_scores`` per C, ``n_convergence_warnings``).
    """
    if kind not in ("logreg", "mlp"):
        raise ValueError(f"fit_probe_pipeline fits 'logreg' or 'mlp', got {kind!r}")
    # Probe fits are many small problems: parallelism comes from settings.n_jobs over seed x fold tasks, and
    # BLAS stays single-threaded inside a fit (multi-threaded BLAS on small matrices oversubscribes the cores
    # and was 10-25x slower on a busy 2-core machine).
    # Features were checked once (_as_features: 2-D, finite): skipping scikit-learn's per-fit validation cuts the
    # Python overhead that dominates small problems (about half the CPU time of the demo's probe jobs).
    with (
        threadpool_limits(limits=1, user_api="blas"),
        sklearn.config_context(assume_finite=True, skip_parameter_validation=True),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", ConvergenceWarning)
        fitted_scaler = scaler().fit(X_ND)
        X_s = fitted_scaler.transform(X_ND)
        scores = _inner_cv_scores(X_s, y_N, groups_N, settings=settings, seed=seed, kind=kind)
        best_C = _best_C(scores)
        clf = _make_classifier(kind, best_C, seed, settings).fit(X_s, y_N)
        pipe = Pipeline([("scaler", fitted_scaler), ("clf", clf)])
    n_conv = 0
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            n_conv += 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return pipe, {"C": best_C, "inner_scores": scores, "n_convergence_warnings": n_conv}


#: Tolerance of the batched inner-CV fits (scikit-learn's default 1e-4 elsewhere). Choosing C compares validation
#: log losses, which at large C move by up to ~1% between two solutions that both meet a loose tol, enough to flip
#: a near-tie. On the benchmark unit's 15 fold-runs x 3 seeds, tol 3e-6 chose the C of a tol-1e-7 fit 45 times out
#: of 45 (3e-5: 41), for ~35% more inner-CV time than 3e-5.
_INNER_TOL = 3e-6


def use_batched(n_rows: int, n_dims: int, settings: ProbeSettings, kind: str = "logreg") -> bool:
    """Whether logistic fits on an (n_rows, n_dims) training matrix go to the batched solver
    (``n_rows * n_dims >= settings.batched_min_size``)."""
    return kind == "logreg" and n_rows * n_dims >= settings.batched_min_size


def _as_logistic(coef_KD: np.ndarray, intercept_K: np.ndarray, classes_K: np.ndarray, C: float, n_iter: int):
    """A fitted ``LogisticRegression`` holding the batched solver's solution (scikit-learn scores it)."""
    clf = LogisticRegression(C=C, solver="lbfgs")
    clf.coef_ = np.asarray(coef_KD, dtype=np.float64)
    clf.intercept_ = np.asarray(intercept_K, dtype=np.float64)
    clf.classes_ = np.asarray(classes_K)
    clf.n_features_in_ = clf.coef_.shape[1]
    clf.n_iter_ = np.array([n_iter], dtype=np.int32)
    return clf


def _scores_of(fit: Any, block: slice, X_ND: np.ndarray, y_N: np.ndarray, metric: str) -> np.ndarray:
    """Inner selection scores (higher is better) of batched problems ``block`` on rows ``X_ND``/``y_N``."""
    proba_NBK = fit.predict_proba(X_ND, block)
    if metric == "accuracy":
        return np.mean(y_N[:, None] == fit.classes_[proba_NBK.argmax(axis=-1)], axis=0)
    return np.array([-_log_loss(y_N, proba_NBK[:, j], fit.classes_) for j in range(proba_NBK.shape[1])])


def _batched_inner_cv(
    X_s: np.ndarray,
    y_N: np.ndarray,
    groups_N: np.ndarray | None,
    rows: Any,
    *,
    settings: ProbeSettings,
    seeds: list[int],
    device: Any,
) -> tuple[dict[int, dict[str, Any]], dict[int, int]]:
    """Every seed's inner CV in one batched call on the scaled rows ``X_s`` (basis ``rows``): per seed the
    chosen C and the mean inner score per C (as :func:`_inner_cv_scores`), and the unconverged fits."""
    from repshift.probes import batched as _batched

    classes = np.unique(y_N)
    grid = sorted(settings.c_grid)
    splits: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    columns, Cs = [], []  # one problem per (seed, inner split, C): a column of 0/1 row weights
    for seed in seeds:
        splits[seed] = []
        if len(grid) == 1:
            continue
        for tr, va in inner_splits(y_N, groups_N, n_splits=settings.inner_folds, seed=seed):
            if np.unique(y_N[tr]).size < classes.size:
                continue  # as _inner_cv_scores: a training set missing a class is skipped
            splits[seed].append((tr, va))
            w = np.zeros(y_N.size)
            w[tr] = 1.0
            columns += [w] * len(grid)
            Cs += grid
        if not splits[seed]:
            raise ValueError("no inner CV fold had every class in its training rows; cannot choose C")
    inner = None
    if columns:
        inner = _batched.fit_logistic_batched(
            X_s,
            y_N,
            np.array(Cs),
            weights=np.stack(columns, axis=1),
            max_iter=settings.max_iter,
            tol=_INNER_TOL,
            threads=1,
            rows=rows,
            device=device,
        )
    infos, n_conv, b = {}, dict.fromkeys(seeds, 0), 0
    for seed in seeds:
        totals = np.zeros(len(grid))
        for _, va in splits[seed]:
            block = slice(b, b + len(grid))  # this split's problems, one per C
            totals += _scores_of(inner, block, X_s[va], y_N[va], settings.inner_metric)
            n_conv[seed] += int((~inner.converged_B[block]).sum())
            b += len(grid)
        values = totals / len(splits[seed]) if splits[seed] else np.full(1, math.nan)
        scores = dict(zip(grid, values.tolist(), strict=True))
        infos[seed] = {"C": _best_C(scores), "inner_scores": scores}
    return infos, n_conv


def fit_probe_pipelines_batched(
    X_ND: np.ndarray,
    y_N: np.ndarray,
    *,
    settings: ProbeSettings,
    seeds: Any,
    groups_N: np.ndarray | None = None,
    scaler: Callable[[], Any] = StandardScaler,
    permutations: Any = None,
    device: Any = None,
) -> tuple[list[tuple[Pipeline, dict[str, Any]]], StackedProbes | None]:
    """:func:`fit_probe_pipeline` (kind ``logreg``) for several ``seeds`` at once on the batched solver, and
    optionally the permutation null of the same rows.

    One scaler and one solver basis (:func:`repshift.probes.batched.basis`) serve everything: first the inner
    CV of every seed (inner folds x C values as 0/1 row weights on the one scaled matrix), then, in a second
    batched call, the refit of each seed's chosen C and, with ``permutations`` (labels (n, P), one column per
    permutation), P fits at the first seed's C (the fixed-C null). Same objective, stopping rule, inner splits
    and choice of C as :func:`fit_probe_pipeline` (agreement tested). Returns one ``(pipeline, info)`` per seed
    and the P null probes as :class:`StackedProbes` (None without ``permutations``).
    """
    from repshift.probes import batched as _batched

    seeds = [int(s) for s in seeds]
    with threadpool_limits(limits=1, user_api="blas"):
        fitted_scaler = scaler().fit(X_ND)
        X_t = fitted_scaler.transform(X_ND)
    rows = _batched.basis(
        X_t if sparse.issparse(X_t) else np.asarray(X_t, dtype=FEATURE_DTYPE), device=device, threads=1
    )
    X_s = rows.X_ND.cpu().numpy()  # the scaled rows, dense float32
    infos, n_conv = _batched_inner_cv(X_s, y_N, groups_N, rows, settings=settings, seeds=seeds, device=device)
    # second call: each distinct chosen C once on all rows, then the null at the first seed's C
    chosen = sorted({infos[s]["C"] for s in seeds})
    labels = [np.asarray(y_N)] * len(chosen)
    C_all = list(chosen)
    n_perm = 0 if permutations is None else np.shape(permutations)[1]
    if n_perm:
        labels += list(np.asarray(permutations).T)
        C_all += [infos[seeds[0]]["C"]] * n_perm
    final = _batched.fit_logistic_batched(
        X_s,
        np.stack(labels, axis=1),
        np.array(C_all),
        max_iter=settings.max_iter,
        threads=1,
        rows=rows,
        device=device,
    )

    def pipeline(j: int, C: float) -> Pipeline:
        coef = final.coef_BKD[j]
        clf = _as_logistic(coef, final.intercept_BK[j], final.classes_, C, int(final.n_iter_B[j]))
        return Pipeline([("scaler", fitted_scaler), ("clf", clf)])

    out = []
    for seed in seeds:
        j = chosen.index(infos[seed]["C"])
        n_conv[seed] += int(not final.converged_B[j])
        out.append((pipeline(j, infos[seed]["C"]), {**infos[seed], "n_convergence_warnings": n_conv[seed]}))
    null = None
    if n_perm:
        j = len(chosen)
        null = StackedProbes(
            fitted_scaler, final.coef_BKD[j:], final.intercept_BK[j:], final.classes_, infos[seeds[0]]["C"]
        )
    return out, null


@dataclass(frozen=True, eq=False)
class StackedProbes:
    """P logistic probes fit on the same scaled rows (the batched permutation null), scored together:
    ``decision(X)`` is (N, P, K') with one column for two classes (scikit-learn's binary layout)."""

    scaler: Any
    coef_PKD: np.ndarray
    intercept_PK: np.ndarray
    classes_K: np.ndarray
    C: float

    def __len__(self) -> int:
        return self.coef_PKD.shape[0]

    def decision(self, X_ND: np.ndarray) -> np.ndarray:
        X = np.asarray(self.scaler.transform(X_ND), dtype=np.float64)
        P, K, D = self.coef_PKD.shape
        z = X @ self.coef_PKD.reshape(P * K, D).T.astype(np.float64)
        return z.reshape(-1, P, K) + self.intercept_PK[None]


#: Columns of the tidy frames returned by :func:`evaluate_probe` and :func:`run_probe_suite`.
ROW_COLUMNS = (
    "probe",
    "train_fraction",
    "test_space",
    "seed",
    "repeat",
    "fold",
    "metric",
    "value",
    "C",
    "n_train",
    "n_test",
)


# --------------------------------------------------------------------------------------------- evaluation
def _metrics(
    y_true: np.ndarray, y_pred: np.ndarray, score_N: np.ndarray | None, classes_K: np.ndarray
) -> dict[str, float]:
    out = {
        "accuracy": float(np.mean(y_true == y_pred)),
        "macro_f1": _macro_f1(y_true, y_pred),
    }
    if classes_K.size == 2:
        positive = y_true == classes_K[1]
        if score_N is None or positive.all() or not positive.any():
            out["auroc"] = math.nan
        else:
            out["auroc"] = _auroc(positive, np.asarray(score_N))
    return out


def _positive_score(pipe: Pipeline, X_ND: np.ndarray, classes_K: np.ndarray) -> np.ndarray | None:
    """Score for classes_K[1] (binary tasks only); None when the model did not see both classes."""
    if classes_K.size != 2 or not np.array_equal(pipe.classes_, classes_K):
        return None
    if hasattr(pipe, "decision_function"):
        return pipe.decision_function(X_ND)
    return pipe.predict_proba(X_ND)[:, 1]


def _rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    frame["repeat"] = frame["repeat"].fillna(0)  # rows made without outer-CV repeats are repeat 0
    return frame.astype(
        {"seed": "int64", "repeat": "int64", "fold": "int64", "n_train": "int64", "n_test": "int64"}
    )
