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
from joblib import Parallel, delayed
from safetensors.numpy import load_file, save_file
from scipy import stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score
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
    n_jobs: int = 1
    inner_metric: str = "log_loss"

    def __post_init__(self) -> None:
        for name in ("c_grid", "seeds", "train_fractions"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "c_grid", tuple(float(c) for c in self.c_grid))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "train_fractions", tuple(float(f) for f in self.train_fractions))
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
    X = np.asarray(X_ND, dtype=np.float64)
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
        return float(accuracy_score(y_N, clf.predict(X_ND)))
    return -float(log_loss(y_N, clf.predict_proba(X_ND), labels=classes_K))


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
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings(record=True) as caught:
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
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }
    if classes_K.size == 2:
        positive = y_true == classes_K[1]
        if score_N is None or positive.all() or not positive.any():
            out["auroc"] = math.nan
        else:
            out["auroc"] = float(roc_auc_score(positive, score_N))
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


def _evaluate_split(
    X_ND: np.ndarray,
    y_N: np.ndarray,
    spaces: Sequence[tuple[str, np.ndarray, np.ndarray]],
    groups_N: np.ndarray | None,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    *,
    seed: int,
    fold: int,
    kind: str,
    train_fraction: float,
    classes_K: np.ndarray,
    settings: ProbeSettings,
) -> tuple[list[dict[str, Any]], int]:
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
    for space, X_eval_ND, y_eval_N in spaces:
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
    return rows, info["n_convergence_warnings"]


def _rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    return frame.astype({"seed": "int64", "fold": "int64", "n_train": "int64", "n_test": "int64"})


def _prepare(
    X_train_ND: Any,
    y_train_N: Any,
    folds_N: Any,
    X_test_ND: Any,
    y_test_N: Any,
    groups_N: Any,
    report_within: bool,
    names: tuple[str, str],
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, np.ndarray, np.ndarray]], np.ndarray | None, np.ndarray]:
    X = _as_features(X_train_ND, names[0])
    n = X.shape[0]
    y = _as_vector(y_train_N, n, "y_train_N")
    folds = _as_vector(folds_N, n, "folds_N")
    groups = None if groups_N is None else _as_vector(groups_N, n, "groups_N")
    spaces: list[tuple[str, np.ndarray, np.ndarray]] = [("same", X, y)]
    if X_test_ND is not None:
        check_same_width(X_train_ND, X_test_ND, name_a=names[0], name_b=names[1])
        X_other = _as_features(X_test_ND, names[1])
        if X_other.shape[0] != n:
            raise ValueError(
                f"{names[1]} has {X_other.shape[0]} rows but {names[0]} has {n}: cross-space evaluation needs "
                "paired rows (same inputs, same order, same folds)"
            )
        y_other = y if y_test_N is None else _as_vector(y_test_N, n, "y_test_N")
        spaces = [("other", X_other, y_other)] + (spaces if report_within else [])
    elif y_test_N is not None:
        raise ValueError("y_test_N was given without X_test_ND")
    return X, y, spaces, groups, folds


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
) -> pd.DataFrame:
    """Outer CV over the stored folds, repeated over ``settings.seeds``; tidy rows (:data:`ROW_COLUMNS`).

    ``kind``: ``logreg`` (scaler + L2 logistic regression, C by inner CV), ``control`` (the same on row-permuted
    training labels, scored against true test labels) or ``mlp`` (scaler + one-hidden-layer MLP, alpha = 1/C by
    inner CV). With ``X_test_ND`` (another model's features, or the paired other modality, rows aligned with
    ``X_train_ND``), the probe is fit on ``X_train_ND`` rows of the training folds and scored on ``X_test_ND`` rows
    of the test fold (``test_space = "other"``); ``report_within`` also scores the same fit on ``X_train_ND``'s
    test rows (``test_space = "same"``), without refitting. ``train_fraction < 1`` fits on a seeded, stratified
    subsample of the training groups (learning curve); test rows are unchanged. ``names`` name the two spaces in
    error messages.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown probe kind {kind!r}; use one of {KINDS}")
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must lie in (0, 1], got {train_fraction}")
    X, y, spaces, groups, folds = _prepare(
        X_train_ND, y_train_N, folds_N, X_test_ND, y_test_N, groups_N, report_within, names
    )
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"y_train_N has a single class ({classes[0]!r}); nothing to probe")
    splits = list(outer_splits(folds, groups))
    tasks = [(seed, k, tr, te) for seed in settings.seeds for k, tr, te in splits]
    logger.info(
        "probe %s: %d rows x %d dims, %d classes, %d folds x %d seeds, train_fraction %.3g, test on %s",
        kind,
        X.shape[0],
        X.shape[1],
        classes.size,
        len(splits),
        len(settings.seeds),
        train_fraction,
        "+".join(s for s, _, _ in spaces),
    )
    results = Parallel(n_jobs=settings.n_jobs)(
        delayed(_evaluate_split)(
            X,
            y,
            spaces,
            groups,
            tr,
            te,
            seed=seed,
            fold=k,
            kind=kind,
            train_fraction=train_fraction,
            classes_K=classes,
            settings=settings,
        )
        for seed, k, tr, te in tasks
    )
    rows = [row for task_rows, _ in results for row in task_rows]
    n_conv = sum(c for _, c in results)
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
    return frame


def majority_baseline(
    y_train_N: np.ndarray,
    folds_N: np.ndarray,
    *,
    y_test_N: np.ndarray | None = None,
    groups_N: np.ndarray | None = None,
    test_spaces: Sequence[str] = ("same",),
) -> pd.DataFrame:
    """Majority-class baseline rows (``probe = "majority"``, ``seed = -1``): predict the training folds' most
    frequent label (ties: smallest label) for every test row. Its auroc is 0.5 by construction."""
    y = np.asarray(y_train_N)
    y_eval = y if y_test_N is None else _as_vector(y_test_N, y.size, "y_test_N")
    classes = np.unique(y)
    rows = []
    for k, tr, te in outer_splits(_as_vector(folds_N, y.size, "folds_N"), groups_N):
        values, counts = np.unique(y[tr], return_counts=True)
        majority = values[int(np.argmax(counts))]
        y_test = y_eval[te]
        metrics = _metrics(y_test, np.full(te.size, majority), np.zeros(te.size), classes)
        for space in test_spaces:
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
                        "n_test": int(te.size),
                    }
                )
    return _rows_frame(rows)


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
) -> pd.DataFrame:
    """Logistic probe, plus (per settings) the shuffled-label control, the MLP, the learning curve and the
    majority baseline, as one tidy frame (:data:`ROW_COLUMNS`; ``probe`` and ``train_fraction`` tell them apart).

    The learning curve reuses the full logistic run for fraction 1.0 instead of refitting it.
    """
    common = {
        "X_test_ND": X_test_ND,
        "y_test_N": y_test_N,
        "settings": settings,
        "groups_N": groups_N,
        "report_within": report_within,
        "names": names,
    }
    frames = [evaluate_probe(X_train_ND, y_train_N, folds_N, kind="logreg", **common)]
    if settings.control:
        frames.append(evaluate_probe(X_train_ND, y_train_N, folds_N, kind="control", **common))
    if settings.mlp:
        frames.append(evaluate_probe(X_train_ND, y_train_N, folds_N, kind="mlp", **common))
    for fraction in sorted(set(settings.train_fractions)):
        if fraction < 1:
            frames.append(
                evaluate_probe(
                    X_train_ND, y_train_N, folds_N, kind="logreg", train_fraction=fraction, **common
                )
            )
    spaces = list(dict.fromkeys(frames[0]["test_space"]))
    frames.append(
        majority_baseline(y_train_N, folds_N, y_test_N=y_test_N, groups_N=groups_N, test_spaces=spaces)
    )
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------------ summary
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
        mean = float(values.mean())
        n_train, n_test = float(sub["n_train"].mean()), float(sub["n_test"].mean())
        if n < 2:
            sd = low = high = math.nan
        else:
            sd = float(values.std(ddof=1))
            se = math.sqrt((1.0 / n + n_test / n_train) * sd**2)
            half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * se
            low, high = max(0.0, mean - half), min(1.0, mean + half)
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
        weights, sidecar = _probe_paths(path_stem)
        tensors = {
            "mean_D": self.mean_D,
            "scale_D": self.scale_D,
            "coef_KD": self.coef_KD,
            "intercept_K": self.intercept_K,
            "classes_K": self.classes_K,
        }
        with atomic_path(weights) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp)
        write_json(
            sidecar,
            {
                "format": PROBE_FORMAT,
                "weights": weights.name,
                "C": self.C,
                "classes": self.classes_K.tolist(),
                "n_features": self.n_features,
                "meta": self.meta,
                "provenance": provenance(self.meta.get("settings")),
            },
        )
        return weights, sidecar

    @classmethod
    def load(cls, path_stem: str | Path) -> FittedProbe:
        weights, sidecar = _probe_paths(path_stem)
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        if info.get("format") != PROBE_FORMAT:
            raise ValueError(f"{sidecar} is not a {PROBE_FORMAT} file (format {info.get('format')!r})")
        arrays = {k: np.array(v, copy=True) for k, v in load_file(weights).items()}
        return cls(C=float(info["C"]), meta=info.get("meta", {}), **arrays)


def _probe_paths(path_stem: str | Path) -> tuple[Path, Path]:
    stem = str(path_stem)
    return Path(stem + ".safetensors"), Path(stem + ".json")


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
