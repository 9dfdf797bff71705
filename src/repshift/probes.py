"""Probes: what can be read out of a feature space, measured by grouped, repeated, nested cross-validation.

The protocol (see FIELD_NOTES §5 for what the original notebooks got wrong):

* Outer CV uses the fold assignment stored with the dataset (``folds_N``): fold ``k`` is the test set, the
  other folds are the training set. Folds are grouped by base image, so no group is on both sides; when
  ``groups_N`` is passed this is checked and a violation raises.
* Every fit is a :class:`~sklearn.pipeline.Pipeline` of :class:`~sklearn.preprocessing.StandardScaler` and an
  L2 :class:`~sklearn.linear_model.LogisticRegression` (lbfgs). The scaler only ever sees training rows.
* ``C`` is chosen by an inner CV on the training rows only (grouped with
  :class:`~sklearn.model_selection.StratifiedGroupKFold` when ``groups_N`` is given, else
  :class:`~sklearn.model_selection.StratifiedKFold`). Each inner fold refits its own scaler on its inner training
  rows and walks the C grid from strongest to weakest regularisation with warm starts (as
  ``LogisticRegressionCV`` does), then the pipeline is refit once on all training rows with the chosen C.
  Inner CV scores by log loss by default (smooth, rarely tied); ties go to the smaller C.
* The outer CV is repeated over ``settings.seeds``; a seed changes the inner-CV shuffling, the shuffled-label
  control's permutation, the learning-curve subsample and the MLP initialisation.
* Each fit is scored in every space it is asked about without refitting: its own test fold (``same``), paired
  rows of another space (``X_test_ND``: ``other``) or any :class:`EvalSpace` (another model's rows, the other
  modality's rows of the same images), always on that space's rows of the held-out fold. The logistic probe of
  every (seed, fold) is returned as :class:`FoldProbes` (:func:`fit_probe_suite`) for scoring later, e.g. at
  other layers (:func:`cross_layer_scores`). Features are cast to float32 (:data:`FEATURE_DTYPE`).
* Chance references: a majority-class baseline (the training folds' most frequent label) and a shuffled-label
  control probe (training labels permuted row-wise, same features, same pipeline, scored on true test labels).

Tidy rows (one per seed x fold x metric), columns :data:`ROW_COLUMNS`:
``probe`` (logreg | control | mlp | majority), ``train_fraction``, ``test_space`` (``same``: tested in the space it
was trained in; ``other``: tested on ``X_test_ND``), ``seed`` (-1 for the unseeded majority baseline), ``fold``,
``metric`` (accuracy, macro_f1, and auroc for binary tasks), ``value``, ``C`` (chosen inverse L2 strength; for the
MLP, ``alpha = 1 / C``), ``n_train``, ``n_test``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from joblib import Parallel, delayed
from safetensors.numpy import load_file, save_file
from scipy import stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from repshift.atomic import atomic_path, write_json
from repshift.provenance import provenance

logger = logging.getLogger(__name__)

#: Probe kinds accepted by :func:`evaluate_probe`.
KINDS = ("logreg", "control", "mlp")
#: Inner-CV selection scores (higher is better after sign flip).
INNER_METRICS = ("log_loss", "accuracy")
#: Columns of the tidy frames returned by :func:`evaluate_probe` and :func:`run_probe_suite`.
ROW_COLUMNS = (
    "probe",
    "train_fraction",
    "test_space",
    "seed",
    "fold",
    "metric",
    "value",
    "C",
    "n_train",
    "n_test",
)
#: How :func:`summarize` builds its intervals.
INTERVAL_METHOD = "corrected-repeated-cv-t"
#: On-disk format tag of :meth:`FittedProbe.save`.
PROBE_FORMAT = "repshift-probe-v1"
#: On-disk format tag of :meth:`FoldProbes.save`.
FOLD_PROBES_FORMAT = "repshift-fold-probes-v1"
#: Probes fit in float32: activations are stored in float16 or bfloat16, so float64 adds no information, and
#: scikit-learn's lbfgs keeps float32 input in float32 (twice as fast: the fits are memory-bandwidth bound).
#: Scaler statistics are accumulated in float64 by scikit-learn and kept in float64 in saved probes.
FEATURE_DTYPE = np.float32

# Distinct streams for the seeded random choices made per (seed, fold).
_STREAM_CONTROL = 1
_STREAM_SUBSAMPLE = 2


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
    cv_g = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(cv_g.split(dummy, y, np.asarray(groups_N)))


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
    """Mean inner-CV score (higher is better) per C of the grid, ascending C."""
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
        scaler = StandardScaler().fit(X_ND[tr])
        X_tr, X_va = scaler.transform(X_ND[tr]), scaler.transform(X_ND[va])
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


def fit_probe_pipeline(
    X_ND: np.ndarray,
    y_N: np.ndarray,
    *,
    settings: ProbeSettings,
    seed: int,
    groups_N: np.ndarray | None = None,
    kind: str = "logreg",
) -> tuple[Pipeline, dict[str, Any]]:
    """Choose C by inner CV on these rows, then fit scaler + classifier on all of them.

    Pass only training rows: everything here (scaler statistics included) is fit on what it is given.
    ``kind`` is ``logreg`` or ``mlp``. Returns the fitted pipeline (steps ``scaler``, ``clf``) and an info dict
    (``C``, ``inner_scores`` per C, ``n_convergence_warnings``).
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
        scores = _inner_cv_scores(X_ND, y_N, groups_N, settings=settings, seed=seed, kind=kind)
        C_grid = np.array(list(scores))
        values = np.array(list(scores.values()))
        best_C = float(C_grid[0] if np.isnan(values).all() else C_grid[int(np.nanargmax(values))])
        pipe = Pipeline(
            [("scaler", StandardScaler()), ("clf", _make_classifier(kind, best_C, seed, settings))]
        ).fit(X_ND, y_N)
    n_conv = 0
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            n_conv += 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return pipe, {"C": best_C, "inner_scores": scores, "n_convergence_warnings": n_conv}


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


def _subsample_training(
    train_idx: np.ndarray,
    y_N: np.ndarray,
    groups_N: np.ndarray | None,
    fraction: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A seeded subsample of whole groups (rows without groups), stratified by each group's set of labels.

    Each stratum keeps ``ceil(fraction * n)`` groups, and at least 2 (where it has them) so that inner CV
    stays possible.
    """
    if fraction >= 1:
        return train_idx
    groups = groups_N[train_idx] if groups_N is not None else train_idx
    frame = pd.DataFrame({"g": groups, "y": y_N[train_idx]})
    signature = frame.groupby("g")["y"].agg(lambda s: repr(sorted(set(s.tolist()))))
    keep: list[Any] = []
    for _, members in signature.groupby(signature):
        names = members.index.to_numpy()
        n_keep = min(names.size, max(math.ceil(fraction * names.size), 2))
        keep.extend(rng.permutation(names)[:n_keep].tolist())
    return train_idx[np.isin(groups, np.asarray(keep, dtype=groups.dtype))]


@dataclass(frozen=True, eq=False)
class EvalSpace:
    """Another feature space in which each outer fold's probe is scored, without refitting.

    Fold ``k``'s probe (fit on the training space's rows outside fold ``k``) is scored on this space's rows whose
    stored fold is ``k``. The rows need not be paired with the training rows (another model's rows, or the other
    modality's rows of the same images), but the folds must be the dataset's stored folds, grouped by base image:
    with ``groups_N`` on both sides, a test group that is also a training group raises ``ValueError``.
    """

    name: str
    X_ND: np.ndarray
    y_N: np.ndarray
    folds_N: np.ndarray
    groups_N: np.ndarray | None = None


def _evaluate_split(
    X_ND: np.ndarray,
    y_N: np.ndarray,
    spaces: Sequence[tuple[str, np.ndarray, np.ndarray, Mapping[int, np.ndarray]]],
    groups_N: np.ndarray | None,
    train_idx: np.ndarray,
    *,
    seed: int,
    fold: int,
    kind: str,
    train_fraction: float,
    classes_K: np.ndarray,
    settings: ProbeSettings,
) -> tuple[list[dict[str, Any]], int, tuple[Pipeline, float] | None]:
    fit_idx = train_idx
    if train_fraction < 1:
        rng = np.random.default_rng([seed, fold, _STREAM_SUBSAMPLE])
        fit_idx = _subsample_training(train_idx, y_N, groups_N, train_fraction, rng)
    y_fit = y_N[fit_idx]
    if kind == "control":
        y_fit = np.random.default_rng([seed, fold, _STREAM_CONTROL]).permutation(y_fit)
    pipe, info = fit_probe_pipeline(
        X_ND[fit_idx],
        y_fit,
        settings=settings,
        seed=seed,
        groups_N=None if groups_N is None else groups_N[fit_idx],
        kind="mlp" if kind == "mlp" else "logreg",
    )
    rows = []
    for space, X_eval_ND, y_eval_N, test_by_fold in spaces:
        test_idx = test_by_fold.get(fold)
        if test_idx is None or not test_idx.size:
            continue
        X_test, y_test = X_eval_ND[test_idx], y_eval_N[test_idx]
        metrics = _metrics(y_test, pipe.predict(X_test), _positive_score(pipe, X_test, classes_K), classes_K)
        for metric, value in metrics.items():
            rows.append(
                {
                    "probe": kind,
                    "train_fraction": float(train_fraction),
                    "test_space": space,
                    "seed": seed,
                    "fold": fold,
                    "metric": metric,
                    "value": value,
                    "C": info["C"],
                    "n_train": int(fit_idx.size),
                    "n_test": int(test_idx.size),
                }
            )
    keep = (pipe, info["C"]) if kind == "logreg" and train_fraction >= 1 else None
    return rows, info["n_convergence_warnings"], keep


def _rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    return frame.astype({"seed": "int64", "fold": "int64", "n_train": "int64", "n_test": "int64"})


@dataclass(frozen=True)
class _Prepared:
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None
    splits: list[tuple[int, np.ndarray, np.ndarray]]
    # (name, X_ND, y_N, test rows per outer fold) of every space the probes are scored in
    spaces: list[tuple[str, np.ndarray, np.ndarray, dict[int, np.ndarray]]]


def _space_tests(
    space: EvalSpace,
    splits: Sequence[tuple[int, np.ndarray, np.ndarray]],
    groups: np.ndarray | None,
    train_name: str,
) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    X = _as_features(space.X_ND, space.name)
    n = X.shape[0]
    y = _as_vector(space.y_N, n, f"{space.name} y_N")
    folds = _check_folds(_as_vector(space.folds_N, n, f"{space.name} folds_N"), None)
    s_groups = None if space.groups_N is None else _as_vector(space.groups_N, n, f"{space.name} groups_N")
    tests = {}
    for k, tr, _ in splits:
        test = np.flatnonzero(folds == k)
        if groups is not None and s_groups is not None:
            shared = np.intersect1d(groups[tr], s_groups[test])
            if shared.size:
                raise ValueError(
                    f"group {shared[0]!r} is in {train_name}'s training rows of fold {k} and in {space.name}'s "
                    "test rows: both spaces must use the dataset's stored folds, grouped by base image"
                )
        tests[k] = test
    return X, y, tests


def _prepare(
    X_train_ND: Any,
    y_train_N: Any,
    folds_N: Any,
    X_test_ND: Any,
    y_test_N: Any,
    groups_N: Any,
    report_within: bool,
    names: tuple[str, str],
    other_spaces: Sequence[EvalSpace],
) -> _Prepared:
    X = _as_features(X_train_ND, names[0])
    n = X.shape[0]
    y = _as_vector(y_train_N, n, "y_train_N")
    folds = _as_vector(folds_N, n, "folds_N")
    groups = None if groups_N is None else _as_vector(groups_N, n, "groups_N")
    splits = list(outer_splits(folds, groups))
    same = ("same", X, y, {k: te for k, _, te in splits})
    spaces = [same]
    if X_test_ND is not None:
        if other_spaces:
            raise ValueError("pass either X_test_ND (paired rows) or other_spaces, not both")
        check_same_width(X_train_ND, X_test_ND, name_a=names[0], name_b=names[1])
        X_other = _as_features(X_test_ND, names[1])
        if X_other.shape[0] != n:
            raise ValueError(
                f"{names[1]} has {X_other.shape[0]} rows but {names[0]} has {n}: cross-space evaluation needs "
                "paired rows (same inputs, same order, same folds)"
            )
        y_other = y if y_test_N is None else _as_vector(y_test_N, n, "y_test_N")
        spaces = [("other", X_other, y_other, same[3])] + (spaces if report_within else [])
    elif y_test_N is not None:
        raise ValueError("y_test_N was given without X_test_ND")
    names_seen = {"same"}
    for space in other_spaces:
        if space.name in names_seen:
            raise ValueError(f"evaluation space name {space.name!r} is used twice")
        names_seen.add(space.name)
        check_same_width(X, space.X_ND, name_a=names[0], name_b=space.name)
        spaces.append((space.name, *_space_tests(space, splits, groups, names[0])))
    return _Prepared(X, y, groups, splits, spaces)


def evaluate_probe(
    X_train_ND: np.ndarray,
    y_train_N: np.ndarray,
    folds_N: np.ndarray,
    *,
    X_test_ND: np.ndarray | None = None,
    y_test_N: np.ndarray | None = None,
    settings: ProbeSettings,
    kind: str = "logreg",
    groups_N: np.ndarray | None = None,
    train_fraction: float = 1.0,
    report_within: bool = False,
    names: tuple[str, str] = ("X_train_ND", "X_test_ND"),
    other_spaces: Sequence[EvalSpace] = (),
) -> pd.DataFrame:
    """Outer CV over the stored folds, repeated over ``settings.seeds``; tidy rows (:data:`ROW_COLUMNS`).

    ``kind``: ``logreg`` (scaler + L2 logistic regression, C by inner CV), ``control`` (the same on row-permuted
    training labels, scored against true test labels) or ``mlp`` (scaler + one-hidden-layer MLP, alpha = 1/C by
    inner CV). With ``X_test_ND`` (another model's features, or the paired other modality, rows aligned with
    ``X_train_ND``), the probe is fit on ``X_train_ND`` rows of the training folds and scored on ``X_test_ND`` rows
    of the test fold (``test_space = "other"``); ``report_within`` also scores the same fit on ``X_train_ND``'s
    test rows (``test_space = "same"``), without refitting. ``other_spaces`` (:class:`EvalSpace`, rows need not be
    paired) scores every fit in each of them too (``test_space = space.name``), besides ``same``.
    ``train_fraction < 1`` fits on a seeded, stratified subsample of the training groups (learning curve); test
    rows are unchanged. ``names`` name the two spaces in error messages.
    """
    return _evaluate(
        X_train_ND,
        y_train_N,
        folds_N,
        X_test_ND=X_test_ND,
        y_test_N=y_test_N,
        settings=settings,
        kind=kind,
        groups_N=groups_N,
        train_fraction=train_fraction,
        report_within=report_within,
        names=names,
        other_spaces=other_spaces,
    )[0]


def _evaluate(
    X_train_ND,
    y_train_N,
    folds_N,
    *,
    settings: ProbeSettings,
    kind: str,
    train_fraction: float,
    prepared: _Prepared | None = None,
    **prep: Any,
) -> tuple[pd.DataFrame, list[tuple[int, int, Pipeline, float]]]:
    if kind not in KINDS:
        raise ValueError(f"unknown probe kind {kind!r}; use one of {KINDS}")
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must lie in (0, 1], got {train_fraction}")
    p = prepared or _prepare(
        X_train_ND,
        y_train_N,
        folds_N,
        prep["X_test_ND"],
        prep["y_test_N"],
        prep["groups_N"],
        prep["report_within"],
        prep["names"],
        prep["other_spaces"],
    )
    classes = np.unique(p.y)
    if classes.size < 2:
        raise ValueError(f"y_train_N has a single class ({classes[0]!r}); nothing to probe")
    tasks = [(seed, k, tr) for seed in settings.seeds for k, tr, _ in p.splits]
    logger.info(
        "probe %s: %d rows x %d dims, %d classes, %d folds x %d seeds, train_fraction %.3g, test on %s",
        kind,
        p.X.shape[0],
        p.X.shape[1],
        classes.size,
        len(p.splits),
        len(settings.seeds),
        train_fraction,
        "+".join(s[0] for s in p.spaces),
    )
    results = Parallel(n_jobs=settings.n_jobs)(
        delayed(_evaluate_split)(
            p.X,
            p.y,
            p.spaces,
            p.groups,
            tr,
            seed=seed,
            fold=k,
            kind=kind,
            train_fraction=train_fraction,
            classes_K=classes,
            settings=settings,
        )
        for seed, k, tr in tasks
    )
    rows = [row for task_rows, _, _ in results for row in task_rows]
    fits = [(seed, k, *fit) for (seed, k, _), (_, _, fit) in zip(tasks, results, strict=True) if fit]
    n_conv = sum(c for _, c, _ in results)
    if n_conv:
        logger.warning(
            "probe %s: %d solver fits hit max_iter=%d without converging; consider raising max_iter",
            kind,
            n_conv,
            settings.max_iter,
        )
    frame = _rows_frame(rows)
    for space, sub in frame[frame.metric == "accuracy"].groupby("test_space"):
        logger.info("probe %s (%s space): mean accuracy %.4f", kind, space, sub["value"].mean())
    return frame, fits


def majority_baseline(
    y_train_N: np.ndarray,
    folds_N: np.ndarray,
    *,
    y_test_N: np.ndarray | None = None,
    groups_N: np.ndarray | None = None,
    test_spaces: Sequence[str] = ("same",),
    other_spaces: Sequence[EvalSpace] = (),
) -> pd.DataFrame:
    """Majority-class baseline rows (``probe = "majority"``, ``seed = -1``): predict the training folds' most
    frequent label (ties: smallest label) for every test row. Its auroc is 0.5 by construction.

    ``test_spaces`` name the spaces scored on ``y_test_N`` (default: the training labels) at the training rows'
    folds; each of ``other_spaces`` is scored on its own labels at its rows of the test fold."""
    y = np.asarray(y_train_N)
    y_eval = y if y_test_N is None else _as_vector(y_test_N, y.size, "y_test_N")
    classes = np.unique(y)
    rows = []
    for k, tr, te in outer_splits(_as_vector(folds_N, y.size, "folds_N"), groups_N):
        values, counts = np.unique(y[tr], return_counts=True)
        majority = values[int(np.argmax(counts))]
        tests = [(space, y_eval[te]) for space in test_spaces]
        for s in other_spaces:
            tests.append((s.name, np.asarray(s.y_N)[np.asarray(s.folds_N) == k]))
        for space, y_test in tests:
            if not y_test.size:
                continue
            metrics = _metrics(y_test, np.full(y_test.size, majority), np.zeros(y_test.size), classes)
            for metric, value in metrics.items():
                rows.append(
                    {
                        "probe": "majority",
                        "train_fraction": 1.0,
                        "test_space": space,
                        "seed": -1,
                        "fold": k,
                        "metric": metric,
                        "value": value,
                        "C": math.nan,
                        "n_train": int(tr.size),
                        "n_test": int(y_test.size),
                    }
                )
    return _rows_frame(rows)


def fit_probe_suite(
    X_train_ND: np.ndarray,
    y_train_N: np.ndarray,
    folds_N: np.ndarray,
    *,
    settings: ProbeSettings,
    groups_N: np.ndarray | None = None,
    X_test_ND: np.ndarray | None = None,
    y_test_N: np.ndarray | None = None,
    report_within: bool = False,
    names: tuple[str, str] = ("X_train_ND", "X_test_ND"),
    other_spaces: Sequence[EvalSpace] = (),
) -> tuple[pd.DataFrame, FoldProbes]:
    """:func:`run_probe_suite`, also returning the logistic probe of every (seed, outer fold) as
    :class:`FoldProbes` (to score later in more spaces, e.g. another layer, without refitting)."""
    p = _prepare(
        X_train_ND, y_train_N, folds_N, X_test_ND, y_test_N, groups_N, report_within, names, other_spaces
    )

    def run(kind: str, fraction: float = 1.0):
        return _evaluate(None, None, None, settings=settings, kind=kind, train_fraction=fraction, prepared=p)

    frame, fits = run("logreg")
    frames = [frame]
    if settings.control:
        frames.append(run("control")[0])
    if settings.mlp:
        frames.append(run("mlp")[0])
    for fraction in sorted(set(settings.train_fractions)):
        if fraction < 1:  # the full logistic run above is fraction 1.0
            frames.append(run("logreg", fraction)[0])
    paired = [s[0] for s in p.spaces if s[0] in ("same", "other")]
    frames.append(
        majority_baseline(
            p.y,
            folds_N,
            y_test_N=y_test_N,
            groups_N=p.groups,
            test_spaces=paired,
            other_spaces=other_spaces,
        )
    )
    return pd.concat(frames, ignore_index=True), FoldProbes.from_fits(fits, np.unique(p.y))


def run_probe_suite(
    X_train_ND: np.ndarray,
    y_train_N: np.ndarray,
    folds_N: np.ndarray,
    *,
    settings: ProbeSettings,
    groups_N: np.ndarray | None = None,
    X_test_ND: np.ndarray | None = None,
    y_test_N: np.ndarray | None = None,
    report_within: bool = False,
    names: tuple[str, str] = ("X_train_ND", "X_test_ND"),
    other_spaces: Sequence[EvalSpace] = (),
) -> pd.DataFrame:
    """Logistic probe, plus (per settings) the shuffled-label control, the MLP, the learning curve and the
    majority baseline, as one tidy frame (:data:`ROW_COLUMNS`; ``probe`` and ``train_fraction`` tell them apart).

    Every fit is made once and scored in every space (``same``, ``X_test_ND``'s ``other`` or each of
    ``other_spaces``); the learning curve reuses the full logistic run for fraction 1.0 instead of refitting it.
    """
    return fit_probe_suite(
        X_train_ND,
        y_train_N,
        folds_N,
        settings=settings,
        groups_N=groups_N,
        X_test_ND=X_test_ND,
        y_test_N=y_test_N,
        report_within=report_within,
        names=names,
        other_spaces=other_spaces,
    )[0]


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


# --------------------------------------------------------------------------------------------- final probe
@dataclass(frozen=True, eq=False)
class FittedProbe:
    """A standardised logistic probe, as plain arrays (no pickle).

    ``decision = ((X - mean_D) / scale_D) @ coef_KD.T + intercept_K``; binary probes have one row in ``coef_KD``
    (positive = ``classes_K[1]``), multiclass probes one row per class.
    """

    mean_D: np.ndarray
    scale_D: np.ndarray
    coef_KD: np.ndarray
    intercept_K: np.ndarray
    classes_K: np.ndarray
    C: float
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        d = self.mean_D.shape[0]
        k = self.classes_K.shape[0]
        rows = 1 if k == 2 else k
        if self.scale_D.shape != (d,) or self.coef_KD.shape != (rows, d) or self.intercept_K.shape != (rows,):
            raise ValueError(
                f"inconsistent probe arrays: mean {self.mean_D.shape}, scale {self.scale_D.shape}, "
                f"coef {self.coef_KD.shape}, intercept {self.intercept_K.shape} for {k} classes"
            )

    @property
    def n_features(self) -> int:
        return int(self.mean_D.shape[0])

    @property
    def is_binary(self) -> bool:
        return self.classes_K.shape[0] == 2

    @classmethod
    def from_pipeline(cls, pipe: Pipeline, *, C: float, meta: Mapping[str, Any] | None = None) -> FittedProbe:
        scaler, clf = pipe.named_steps["scaler"], pipe.named_steps["clf"]
        return cls(
            mean_D=np.asarray(scaler.mean_, dtype=np.float64).copy(),
            scale_D=np.asarray(scaler.scale_, dtype=np.float64).copy(),
            coef_KD=np.asarray(clf.coef_, dtype=np.float64).copy(),
            intercept_K=np.asarray(clf.intercept_, dtype=np.float64).copy(),
            classes_K=np.asarray(clf.classes_).copy(),
            C=float(C),
            meta=dict(meta or {}),
        )

    def decision_function(self, X_ND: np.ndarray) -> np.ndarray:
        """Scores: shape (N,) for binary probes (positive = ``classes_K[1]``), (N, K) otherwise."""
        X = np.asarray(X_ND, dtype=np.float64)
        check_same_width(X, self.mean_D, name_a="X_ND", name_b="the probe")
        scores = ((X - self.mean_D) / self.scale_D) @ self.coef_KD.T + self.intercept_K
        return scores[:, 0] if self.is_binary else scores

    def predict(self, X_ND: np.ndarray) -> np.ndarray:
        scores = self.decision_function(X_ND)
        if self.is_binary:
            return self.classes_K[(scores > 0).astype(np.intp)]
        return self.classes_K[np.argmax(scores, axis=1)]

    @property
    def direction_D(self) -> np.ndarray:
        """Unit-norm probe direction in the ORIGINAL (unstandardised) feature space, binary probes only.

        The decision is ``w . (x - mean) / scale + b = (w / scale) . x + const``, so ``w / scale`` is the direction
        in which the original features move the score; it is normalised to length 1 and points towards
        ``classes_K[1]``. (Use it as a steering direction only in the space of the same layer it was fit on.)
        """
        if not self.is_binary:
            raise ValueError(
                f"direction_D is defined for binary probes; this probe has {self.classes_K.shape[0]} classes "
                "(use directions_KD for one direction per class)"
            )
        return self.directions_KD[0]

    @property
    def directions_KD(self) -> np.ndarray:
        """Row-wise unit-norm ``coef / scale`` (one row for binary probes, one per class otherwise)."""
        w_KD = self.coef_KD / self.scale_D
        norms_K1 = np.linalg.norm(w_KD, axis=1, keepdims=True)
        return w_KD / np.where(norms_K1 > 0, norms_K1, 1.0)

    def save(self, path_stem: str | Path) -> tuple[Path, Path]:
        """Write ``<path_stem>.safetensors`` (arrays) and ``<path_stem>.json`` (C, classes, meta, provenance)."""
        if not np.issubdtype(self.classes_K.dtype, np.number):
            raise ValueError(f"only numeric class labels can be saved, got dtype {self.classes_K.dtype}")
        tensors = {
            "mean_D": self.mean_D,
            "scale_D": self.scale_D,
            "coef_KD": self.coef_KD,
            "intercept_K": self.intercept_K,
            "classes_K": self.classes_K,
        }
        return _save_arrays(path_stem, PROBE_FORMAT, tensors, {"C": self.C}, self)

    @classmethod
    def load(cls, path_stem: str | Path) -> FittedProbe:
        info, arrays = _load_arrays(path_stem, PROBE_FORMAT)
        return cls(C=float(info["C"]), meta=info.get("meta", {}), **arrays)


@dataclass(frozen=True, eq=False)
class FoldProbes:
    """The logistic probe of every (seed, outer fold) of a suite, stacked (``F`` fits), as plain arrays.

    Fit ``f`` was trained on the rows outside stored fold ``fold_F[f]`` with seed ``seed_F[f]``, so it may only be
    scored on rows of that fold: :meth:`score` does exactly that, in any space of the same width (the same inputs
    at another layer, the other modality of the same images). ``coef_FKD`` has one row per fit and class (one row
    for binary probes), as in :class:`FittedProbe`.
    """

    seed_F: np.ndarray
    fold_F: np.ndarray
    C_F: np.ndarray
    n_train_F: np.ndarray
    mean_FD: np.ndarray
    scale_FD: np.ndarray
    coef_FKD: np.ndarray
    intercept_FK: np.ndarray
    classes_K: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        f, d = self.mean_FD.shape
        rows = 1 if self.classes_K.shape[0] == 2 else self.classes_K.shape[0]
        shapes = {
            "seed_F": (self.seed_F.shape, (f,)),
            "fold_F": (self.fold_F.shape, (f,)),
            "C_F": (self.C_F.shape, (f,)),
            "n_train_F": (self.n_train_F.shape, (f,)),
            "scale_FD": (self.scale_FD.shape, (f, d)),
            "coef_FKD": (self.coef_FKD.shape, (f, rows, d)),
            "intercept_FK": (self.intercept_FK.shape, (f, rows)),
        }
        bad = {k: got for k, (got, want) in shapes.items() if got != want}
        if bad:
            raise ValueError(f"inconsistent fold-probe arrays for {f} fits x {d} dims: {bad}")

    def __len__(self) -> int:
        return int(self.seed_F.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.mean_FD.shape[1])

    @classmethod
    def from_fits(cls, fits: Sequence[tuple[int, int, Pipeline, float]], classes_K: np.ndarray) -> FoldProbes:
        """From ``(seed, fold, pipeline, C)`` tuples; fits that did not see every class are left out."""
        kept = [f for f in fits if np.array_equal(f[2].named_steps["clf"].classes_, classes_K)]
        if len(kept) < len(fits):
            logger.warning(
                "%d fold probe(s) missed a class in training and are not kept", len(fits) - len(kept)
            )
        if not kept:
            raise ValueError("no fold probe saw every class; nothing to keep")
        probes = [FittedProbe.from_pipeline(pipe, C=C) for _, _, pipe, C in kept]
        return cls(
            seed_F=np.array([s for s, *_ in kept], dtype=np.int64),
            fold_F=np.array([k for _, k, *_ in kept], dtype=np.int64),
            C_F=np.array([C for *_, C in kept], dtype=np.float64),
            n_train_F=np.array(
                [p.named_steps["scaler"].n_samples_seen_ for _, _, p, _ in kept], dtype=np.int64
            ),
            mean_FD=np.stack([p.mean_D for p in probes]),
            scale_FD=np.stack([p.scale_D for p in probes]),
            coef_FKD=np.stack([p.coef_KD for p in probes]),
            intercept_FK=np.stack([p.intercept_K for p in probes]),
            classes_K=np.asarray(classes_K).copy(),
        )

    def probe(self, f: int) -> FittedProbe:
        """Fit ``f`` as a :class:`FittedProbe`."""
        return FittedProbe(
            mean_D=self.mean_FD[f],
            scale_D=self.scale_FD[f],
            coef_KD=self.coef_FKD[f],
            intercept_K=self.intercept_FK[f],
            classes_K=self.classes_K,
            C=float(self.C_F[f]),
            meta={"seed": int(self.seed_F[f]), "fold": int(self.fold_F[f])},
        )

    def score(self, X_ND: np.ndarray, y_N: np.ndarray, folds_N: np.ndarray, *, space: str) -> pd.DataFrame:
        """Tidy rows (:data:`ROW_COLUMNS`, ``probe = "logreg"``, ``test_space = space``): each fit scored on the rows
        of ``X_ND`` in its held-out fold (``folds_N`` must be the dataset's stored folds)."""
        X = _as_features(X_ND, space)
        check_same_width(X, self.mean_FD[0], name_a=space, name_b="the fold probes")
        y = _as_vector(y_N, X.shape[0], "y_N")
        folds = _as_vector(folds_N, X.shape[0], "folds_N")
        rows = []
        for f in range(len(self)):
            test = np.flatnonzero(folds == self.fold_F[f])
            if not test.size:
                continue
            probe = self.probe(f)
            scores = probe.decision_function(X[test])
            metrics = _metrics(
                y[test], probe.predict(X[test]), scores if probe.is_binary else None, self.classes_K
            )
            for metric, value in metrics.items():
                rows.append(
                    {
                        "probe": "logreg",
                        "train_fraction": 1.0,
                        "test_space": space,
                        "seed": int(self.seed_F[f]),
                        "fold": int(self.fold_F[f]),
                        "metric": metric,
                        "value": value,
                        "C": float(self.C_F[f]),
                        "n_train": int(self.n_train_F[f]),
                        "n_test": int(test.size),
                    }
                )
        return _rows_frame(rows)

    def save(self, path_stem: str | Path) -> tuple[Path, Path]:
        """Write ``<path_stem>.safetensors`` (stacked arrays) and ``<path_stem>.json`` (format, meta, provenance)."""
        if not np.issubdtype(self.classes_K.dtype, np.number):
            raise ValueError(f"only numeric class labels can be saved, got dtype {self.classes_K.dtype}")
        names = [f.name for f in dataclasses.fields(self) if f.name != "meta"]
        tensors = {k: getattr(self, k) for k in names}
        return _save_arrays(path_stem, FOLD_PROBES_FORMAT, tensors, {"n_fits": len(self)}, self)

    @classmethod
    def load(cls, path_stem: str | Path) -> FoldProbes:
        info, arrays = _load_arrays(path_stem, FOLD_PROBES_FORMAT)
        return cls(meta=info.get("meta", {}), **arrays)


def _probe_paths(path_stem: str | Path) -> tuple[Path, Path]:
    stem = str(path_stem)
    return Path(stem + ".safetensors"), Path(stem + ".json")


def _save_arrays(
    path_stem: str | Path, fmt: str, tensors: dict[str, np.ndarray], header: dict[str, Any], probe: Any
) -> tuple[Path, Path]:
    """``<stem>.safetensors`` (the arrays) + ``<stem>.json`` (format, classes, width, meta, provenance), both
    atomic; no pickle anywhere."""
    weights, sidecar = _probe_paths(path_stem)
    with atomic_path(weights) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp)
    write_json(
        sidecar,
        {
            "format": fmt,
            "weights": weights.name,
            **header,
            "classes": probe.classes_K.tolist(),
            "n_features": probe.n_features,
            "meta": probe.meta,
            "provenance": provenance(probe.meta.get("settings")),
        },
    )
    return weights, sidecar


def _load_arrays(path_stem: str | Path, fmt: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The sidecar JSON and the arrays written by :func:`_save_arrays`; a file of another format is refused."""
    weights, sidecar = _probe_paths(path_stem)
    info = json.loads(sidecar.read_text(encoding="utf-8"))
    if info.get("format") != fmt:
        raise ValueError(f"{sidecar} is not a {fmt} file (format {info.get('format')!r})")
    return info, {k: np.array(v, copy=True) for k, v in load_file(weights).items()}


def _json_number(x: float) -> float | None:
    return None if math.isnan(x) else x


def fit_final_probe(
    X_ND: np.ndarray,
    y_N: np.ndarray,
    *,
    settings: ProbeSettings,
    groups_N: np.ndarray | None = None,
    seed: int | None = None,
) -> FittedProbe:
    """Scaler + L2 logistic regression on all rows, C chosen by (grouped) inner CV with ``seed``
    (default: the first of ``settings.seeds``). For directions and steering, not for accuracy estimates."""
    X = _as_features(X_ND, "X_ND")
    y = _as_vector(y_N, X.shape[0], "y_N")
    groups = None if groups_N is None else _as_vector(groups_N, X.shape[0], "groups_N")
    seed = settings.seeds[0] if seed is None else int(seed)
    pipe, info = fit_probe_pipeline(X, y, settings=settings, seed=seed, groups_N=groups)
    if info["n_convergence_warnings"]:
        logger.warning("final probe: %d fits did not converge", info["n_convergence_warnings"])
    meta = {
        "C": info["C"],
        "inner_metric": settings.inner_metric,
        "inner_scores": {repr(c): _json_number(s) for c, s in info["inner_scores"].items()},
        "n_rows": int(X.shape[0]),
        "n_features": int(X.shape[1]),
        "grouped": groups is not None,
        "seed": seed,
        "settings": settings.to_dict(),
    }
    logger.info("final probe: %d rows x %d dims, C=%g", X.shape[0], X.shape[1], info["C"])
    return FittedProbe.from_pipeline(pipe, C=info["C"], meta=meta)


def direction_cosine(probe_a: FittedProbe, probe_b: FittedProbe) -> float:
    """Cosine between two binary probes' :attr:`FittedProbe.direction_D` (same width and classes required)."""
    check_same_width(probe_a.mean_D, probe_b.mean_D, name_a="probe_a", name_b="probe_b")
    if not np.array_equal(probe_a.classes_K, probe_b.classes_K):
        raise ValueError(
            f"probes have different classes ({probe_a.classes_K.tolist()} vs {probe_b.classes_K.tolist()}); "
            "their directions' signs are not comparable"
        )
    return float(np.dot(probe_a.direction_D, probe_b.direction_D))


def cross_layer_scores(
    fold_probes: Mapping[int, FoldProbes],
    test_spaces: Mapping[int, tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> pd.DataFrame:
    """Every train layer's fold probes scored at every test layer, without refitting (layer x layer transfer).

    ``fold_probes``: train layer -> :class:`FoldProbes` (fit on one space at that layer); ``test_spaces``: test
    layer -> ``(X_ND, y_N, folds_N)`` of the space they are scored in (e.g. the paired images). Each fit is scored
    only on its held-out fold's rows. Rows: :data:`ROW_COLUMNS` (``test_space`` = ``"other"``) plus
    ``train_layer`` and ``test_layer``.
    """
    frames = []
    prepared = {j: (_as_features(X, f"layer {j}"), y, f) for j, (X, y, f) in test_spaces.items()}
    for i, fp in sorted(fold_probes.items()):
        for j, (X, y, folds) in sorted(prepared.items()):
            rows = fp.score(X, y, folds, space="other")
            frames.append(rows.assign(train_layer=int(i), test_layer=int(j)))
    if not frames:
        return pd.DataFrame(columns=[*ROW_COLUMNS, "train_layer", "test_layer"])
    return pd.concat(frames, ignore_index=True)
