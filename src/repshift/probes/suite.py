"""The probe suite: within-model, cross-model and cross-modal probes with controls."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from repshift.probes.cv import (
    KINDS,
    ProbeSettings,
    _as_features,
    _as_vector,
    _check_folds,
    _metrics,
    _positive_score,
    _rows_frame,
    check_same_width,
    fit_probe_pipeline,
    fit_probe_pipelines_batched,
    outer_splits,
    use_batched,
)
from repshift.probes.saved import FoldProbes
from repshift.progress import progress

logger = logging.getLogger(__name__)


# Distinct streams for the seeded random choices made per (seed, fold).
_STREAM_CONTROL = 1


_STREAM_SUBSAMPLE = 2


_STREAM_NULL = 3


#: Probe name of the permutation-null rows (``seed`` holds the permutation index there). Not "null": pandas
#: reads the string "null" back from a TSV as a missing value.
NULL = "permutation"


#: Suffix of the re-centred copy of every cross-space score (``"other-recentred"``): the target space's rows are
#: shifted by (source training mean - target training mean) before the source probe's scaler, so that a constant
#: offset between the spaces cannot by itself make the transfer fail. The target mean uses the target's rows
#: outside the test fold, without labels.
RECENTRED = "-recentred"


# An outer fold-run: (repeat, fold).
_Run = tuple[int, int]


# (name, X_ND, y_N, test rows per fold-run, target training rows per fold-run or None = score as is)
_Space = tuple[str, np.ndarray, np.ndarray, Mapping[_Run, np.ndarray], Mapping[_Run, np.ndarray] | None]


def _as_fold_matrix(folds: Any, n: int, name: str) -> np.ndarray:
    """(R, N) outer folds from a (N,) vector (one repeat) or an (R, N) matrix (R repeats)."""
    f = np.asarray(folds)
    if f.ndim == 1:
        f = f[None, :]
    if f.ndim != 2 or f.shape[1] != n:
        raise ValueError(
            f"{name} must have shape ({n},) or (repeats, {n}) to match the features, got {f.shape}"
        )
    return f


def _splits(
    folds_RN: np.ndarray, groups_N: np.ndarray | None
) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(repeat, fold, train_idx, test_idx)`` of every stored repeat's outer folds."""
    return [
        (r, k, tr, te) for r in range(folds_RN.shape[0]) for k, tr, te in outer_splits(folds_RN[r], groups_N)
    ]


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
    stored fold is ``k`` (``folds_N``: (N,), or (repeats, N) like the training folds). The rows need not be paired with the training rows (another model's rows, or the other
    modality's rows of the same images), but the folds must be the dataset's stored folds, grouped by base image:
    with ``groups_N`` on both sides, a test group that is also a training group raises ``ValueError``.
    """

    name: str
    X_ND: np.ndarray
    y_N: np.ndarray
    folds_N: np.ndarray
    groups_N: np.ndarray | None = None


def _fit_rows(
    train_idx: np.ndarray,
    y_N: np.ndarray,
    groups_N: np.ndarray | None,
    *,
    seed: int,
    repeat: int,
    fold: int,
    train_fraction: float,
) -> np.ndarray:
    """The rows a probe of this (seed, fold-run) fits on: the training rows, or a seeded subsample of them."""
    if train_fraction >= 1:
        return train_idx
    rng = np.random.default_rng([seed, repeat, fold, _STREAM_SUBSAMPLE])
    return _subsample_training(train_idx, y_N, groups_N, train_fraction, rng)


def _test_sets(
    X_ND: np.ndarray, spaces: Sequence[_Space], fit_idx: np.ndarray, repeat: int, fold: int
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(space, X_test, y_test)`` of fold-run (repeat, fold) in every space that has test rows there; a
    re-centred space's rows are shifted by (source mean over ``fit_idx`` - the space's own training mean)."""
    source_mean_D = None
    for space, X_eval_ND, y_eval_N, test_by_fold, centre_by_fold in spaces:
        test_idx = test_by_fold.get((repeat, fold))
        if test_idx is None or not test_idx.size:
            continue
        X_test = X_eval_ND[test_idx]
        if centre_by_fold is not None:
            if source_mean_D is None:
                source_mean_D = X_ND[fit_idx].mean(axis=0)
            X_test = X_test - X_eval_ND[centre_by_fold[(repeat, fold)]].mean(axis=0) + source_mean_D
        yield space, X_test, y_eval_N[test_idx]


def _row(probe, fraction, space, seed, repeat, fold, metric, value, C, n_train, n_test) -> dict[str, Any]:
    return {
        "probe": probe,
        "train_fraction": float(fraction),
        "test_space": space,
        "seed": seed,
        "repeat": repeat,
        "fold": fold,
        "metric": metric,
        "value": value,
        "C": C,
        "n_train": int(n_train),
        "n_test": int(n_test),
    }


def _score_rows(
    X_ND: np.ndarray,
    spaces: Sequence[_Space],
    fit_idx: np.ndarray,
    pipe: Pipeline,
    C: float,
    *,
    probe: str,
    seed: int,
    repeat: int,
    fold: int,
    train_fraction: float,
    classes_K: np.ndarray,
) -> list[dict[str, Any]]:
    """Rows of one fitted probe scored in every space on the fold-run's test rows (re-centred where asked)."""
    rows = []
    for space, X_test, y_test in _test_sets(X_ND, spaces, fit_idx, repeat, fold):
        metrics = _metrics(y_test, pipe.predict(X_test), _positive_score(pipe, X_test, classes_K), classes_K)
        for metric, value in metrics.items():
            rows.append(
                _row(
                    probe,
                    train_fraction,
                    space,
                    seed,
                    repeat,
                    fold,
                    metric,
                    value,
                    C,
                    fit_idx.size,
                    y_test.size,
                )
            )
    return rows


def _evaluate_split(
    X_ND: np.ndarray,
    y_N: np.ndarray,
    spaces: Sequence[_Space],
    groups_N: np.ndarray | None,
    train_idx: np.ndarray,
    *,
    seed: int,
    repeat: int,
    fold: int,
    kind: str,
    train_fraction: float,
    classes_K: np.ndarray,
    settings: ProbeSettings,
) -> tuple[list[dict[str, Any]], int, tuple[Pipeline, float] | None]:
    fit_idx = _fit_rows(
        train_idx, y_N, groups_N, seed=seed, repeat=repeat, fold=fold, train_fraction=train_fraction
    )
    y_fit = y_N[fit_idx]
    if kind == "control":
        y_fit = np.random.default_rng([seed, repeat, fold, _STREAM_CONTROL]).permutation(y_fit)
    pipe, info = fit_probe_pipeline(
        X_ND[fit_idx],
        y_fit,
        settings=settings,
        seed=seed,
        groups_N=None if groups_N is None else groups_N[fit_idx],
        kind="mlp" if kind == "mlp" else "logreg",
    )
    rows = _score_rows(
        X_ND,
        spaces,
        fit_idx,
        pipe,
        info["C"],
        probe=kind,
        seed=seed,
        repeat=repeat,
        fold=fold,
        train_fraction=train_fraction,
        classes_K=classes_K,
    )
    keep = (pipe, info["C"]) if kind == "logreg" and train_fraction >= 1 else None
    return rows, info["n_convergence_warnings"], keep


def _permutations(p: _Prepared, r: int, k: int, train_idx: np.ndarray, settings: ProbeSettings) -> np.ndarray:
    """(n_train, P) permuted training labels of fold-run (r, k), seeded per repeat, fold and permutation."""
    rng = np.random.default_rng([settings.seeds[0], r, k, _STREAM_NULL])
    y = p.y[train_idx]
    return np.stack([rng.permutation(y) for _ in range(settings.permutations)], axis=1)


def _null_rows(
    p: _Prepared, r: int, k: int, train_idx: np.ndarray, models: Sequence[tuple[Any, float]]
) -> list[dict[str, Any]]:
    """Null rows of fold-run (r, k): permutation ``i``'s model (scaler included) scored like the real probe."""
    classes = np.unique(p.y)
    rows = []
    for i, (model, C) in enumerate(models):
        rows += _score_rows(
            p.X,
            p.spaces,
            train_idx,
            model,
            C,
            probe=NULL,
            seed=i,
            repeat=r,
            fold=k,
            train_fraction=1.0,
            classes_K=classes,
        )
    return rows


def _evaluate_run_batched(
    p: _Prepared,
    r: int,
    k: int,
    train_idx: np.ndarray,
    *,
    seeds: Sequence[int],
    train_fraction: float,
    classes_K: np.ndarray,
    settings: ProbeSettings,
    with_null: bool,
) -> tuple[
    list[tuple[list[dict[str, Any]], int, tuple[Pipeline, float] | None]], list[dict[str, Any]] | None
]:
    """The logistic probes of fold-run (r, k) for ``seeds`` on the batched solver (one scaler, one basis), and
    with ``with_null`` its fixed-C permutation null on the same basis: what :func:`_evaluate_split` and
    :func:`_null_split` compute, in two batched calls."""
    fit_idx = _fit_rows(
        train_idx, p.y, p.groups, seed=seeds[0], repeat=r, fold=k, train_fraction=train_fraction
    )
    fits, null = fit_probe_pipelines_batched(
        p.X[fit_idx],
        p.y[fit_idx],
        settings=settings,
        seeds=seeds,
        groups_N=None if p.groups is None else p.groups[fit_idx],
        permutations=_permutations(p, r, k, train_idx, settings) if with_null else None,
    )
    out = []
    for seed, (pipe, info) in zip(seeds, fits, strict=True):
        rows = _score_rows(
            p.X,
            p.spaces,
            fit_idx,
            pipe,
            info["C"],
            probe="logreg",
            seed=seed,
            repeat=r,
            fold=k,
            train_fraction=train_fraction,
            classes_K=classes_K,
        )
        out.append((rows, info["n_convergence_warnings"], (pipe, info["C"]) if train_fraction >= 1 else None))
    if null is None:
        return out, None
    rows = []  # every permutation's decision values at once (one product per space), scored like the real probe
    for space, X_test, y_test in _test_sets(p.X, p.spaces, train_idx, r, k):
        z_NPK = null.decision(X_test)
        for i in range(z_NPK.shape[1]):
            z = z_NPK[:, i]
            pred = null.classes_K[(z[:, 0] > 0).astype(int) if z.shape[1] == 1 else z.argmax(axis=1)]
            score = z[:, 0] if z.shape[1] == 1 else None
            for metric, value in _metrics(y_test, pred, score, classes_K).items():
                rows.append(
                    _row(NULL, 1.0, space, i, r, k, metric, value, null.C, train_idx.size, y_test.size)
                )
    return out, rows


@dataclass(frozen=True)
class _Prepared:
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None
    # (repeat, fold, train rows, test rows) of every outer fold-run
    splits: list[tuple[int, int, np.ndarray, np.ndarray]]
    # every space the probes are scored in (see _Space)
    spaces: list[_Space]


def _space_tests(
    space: EvalSpace,
    splits: Sequence[tuple[int, int, np.ndarray, np.ndarray]],
    groups: np.ndarray | None,
    train_name: str,
) -> tuple[np.ndarray, np.ndarray, dict[_Run, np.ndarray], np.ndarray]:
    X = _as_features(space.X_ND, space.name)
    n = X.shape[0]
    y = _as_vector(space.y_N, n, f"{space.name} y_N")
    folds = _as_fold_matrix(space.folds_N, n, f"{space.name} folds_N")
    repeats = {r for r, *_ in splits}
    if folds.shape[0] < len(repeats):
        raise ValueError(
            f"{space.name} has folds of {folds.shape[0]} outer-CV repeat(s), {train_name} of {len(repeats)}: "
            "pass the same repeats' folds for every space"
        )
    for row in folds:
        _check_folds(row, None)
    s_groups = None if space.groups_N is None else _as_vector(space.groups_N, n, f"{space.name} groups_N")
    tests = {}
    for r, k, tr, _ in splits:
        test = np.flatnonzero(folds[r] == k)
        if groups is not None and s_groups is not None:
            shared = np.intersect1d(groups[tr], s_groups[test])
            if shared.size:
                raise ValueError(
                    f"group {shared[0]!r} is in {train_name}'s training rows of fold {k} (repeat {r}) and in "
                    f"{space.name}'s "
                    "test rows: both spaces must use the dataset's stored folds, grouped by base image"
                )
        tests[(r, k)] = test
    return X, y, tests, folds


def _recentred(space: _Space, folds_RN: np.ndarray) -> _Space:
    """The re-centred copy of a cross space: centred on its own rows outside each test fold (no labels)."""
    name, X, y, tests, _ = space
    train_rows = {(r, k): np.flatnonzero(folds_RN[r] != k) for r, k in tests}
    empty = [run for run, rows in train_rows.items() if not rows.size]
    if empty:
        raise ValueError(
            f"{name}: no rows outside (repeat, fold) {empty[0]} to estimate the space's mean from"
        )
    return (name + RECENTRED, X, y, tests, train_rows)


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
    folds = _as_fold_matrix(folds_N, n, "folds_N")
    groups = None if groups_N is None else _as_vector(groups_N, n, "groups_N")
    splits = _splits(folds, groups)
    same = ("same", X, y, {(r, k): te for r, k, _, te in splits}, None)
    spaces: list[_Space] = [same]
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
        other = ("other", X_other, y_other, same[3], None)
        spaces = [other, _recentred(other, folds)] + (spaces if report_within else [])
    elif y_test_N is not None:
        raise ValueError("y_test_N was given without X_test_ND")
    names_seen = {"same"}
    for space in other_spaces:
        if space.name in names_seen:
            raise ValueError(f"evaluation space name {space.name!r} is used twice")
        names_seen.add(space.name)
        check_same_width(X, space.X_ND, name_a=names[0], name_b=space.name)
        if space.name.endswith(RECENTRED):
            raise ValueError(f"evaluation space name {space.name!r}: the suffix {RECENTRED!r} is reserved")
        X_s, y_s, tests, s_folds = _space_tests(space, splits, groups, names[0])
        plain = (space.name, X_s, y_s, tests, None)
        spaces += [plain, _recentred(plain, s_folds)]
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

    ``folds_N`` is one fold vector (N,) or the stored folds of several outer-CV repeats (repeats, N): each
    (repeat, fold) is a distinct fold-run (column ``repeat``); seeds only reshuffle the inner CV within a run.

    ``kind``: ``logreg`` (scaler + L2 logistic regression, C by inner CV), ``control`` (the same on row-permuted
    training labels, scored against true test labels) or ``mlp`` (scaler + one-hidden-layer MLP, alpha = 1/C by
    inner CV). With ``X_test_ND`` (another model's features, or the paired other modality, rows aligned with
    ``X_train_ND``), the probe is fit on ``X_train_ND`` rows of the training folds and scored on ``X_test_ND`` rows
    of the test fold (``test_space = "other"``); ``report_within`` also scores the same fit on ``X_train_ND``'s
    test rows (``test_space = "same"``), without refitting. ``other_spaces`` (:class:`EvalSpace`, rows need not be
    paired) scores every fit in each of them too (``test_space = space.name``), besides ``same``. Every cross space
    is also scored re-centred (``test_space = "<name>-recentred"``, see :data:`RECENTRED`). Metrics: accuracy,
    macro-F1 and, for binary tasks, AUROC (threshold-free: an offset moves a linear probe's threshold, not its
    ranking, so AUROC beside accuracy tells an offset from a lost direction).
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


def _parallel(settings: ProbeSettings, jobs: Any, *, total: int, desc: str) -> list[Any]:
    """``jobs`` over ``settings.n_jobs`` joblib workers, results in order, with a progress bar (the rule's log)."""
    run = Parallel(n_jobs=settings.n_jobs, return_as="generator")
    return list(progress(run(jobs), desc=desc, unit="fit", total=total))


def _evaluate_batched(
    p: _Prepared,
    tasks: list[tuple[int, int, int, np.ndarray]],
    *,
    train_fraction: float,
    classes_K: np.ndarray,
    settings: ProbeSettings,
    with_null: bool,
) -> tuple[list[Any], list[dict[str, Any]] | None]:
    """:func:`_evaluate_split`'s results for ``tasks`` (seed, repeat, fold, train rows) on the batched engine:
    one job per fold-run (every seed's inner CV and refit, and the null, on one basis); a learning-curve
    fraction subsamples per seed, so there one job per (seed, fold-run). Also the null rows (None without)."""
    fraction = f" at {train_fraction:g} of rows" if train_fraction < 1 else ""
    with_null = with_null and train_fraction >= 1
    groups = (
        [(tuple(settings.seeds), r, k, tr) for r, k, tr, _ in p.splits]
        if train_fraction >= 1
        else [((seed,), r, k, tr) for seed, r, k, tr in tasks]
    )
    done = _parallel(
        settings,
        (
            delayed(_evaluate_run_batched)(
                p,
                r,
                k,
                tr,
                seeds=seeds,
                train_fraction=train_fraction,
                classes_K=classes_K,
                settings=settings,
                with_null=with_null,
            )
            for seeds, r, k, tr in groups
        ),
        total=len(groups),
        desc=f"probe logreg{fraction} (batched, all seeds per fold-run)",
    )
    by_task = {
        (seed, r, k): result
        for (seeds, r, k, _), (results, _) in zip(groups, done, strict=True)
        for seed, result in zip(seeds, results, strict=True)
    }
    null_rows = [row for _, rows in done for row in rows] if with_null else None
    return [by_task[(seed, r, k)] for seed, r, k, _ in tasks], null_rows


def _evaluate_one_by_one(
    p: _Prepared, tasks: list[tuple[int, int, int, np.ndarray]], *, kind: str, train_fraction: float, settings
) -> list[Any]:
    """:func:`_evaluate_split` for each of ``tasks`` (seed, repeat, fold, train rows), over joblib workers."""
    fraction = f" at {train_fraction:g} of rows" if train_fraction < 1 else ""
    return _parallel(
        settings,
        (
            delayed(_evaluate_split)(
                p.X,
                p.y,
                p.spaces,
                p.groups,
                tr,
                seed=seed,
                repeat=r,
                fold=k,
                kind=kind,
                train_fraction=train_fraction,
                classes_K=np.unique(p.y),
                settings=settings,
            )
            for seed, r, k, tr in tasks
        ),
        total=len(tasks),
        desc=f"probe {kind}{fraction}",
    )


def _evaluate(
    X_train_ND,
    y_train_N,
    folds_N,
    *,
    settings: ProbeSettings,
    kind: str,
    train_fraction: float,
    prepared: _Prepared | None = None,
    with_null: bool = False,
    **prep: Any,
) -> tuple[pd.DataFrame, list[tuple[int, int, int, Pipeline, float]], pd.DataFrame | None]:
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
    tasks = [(seed, r, k, tr) for seed in settings.seeds for r, k, tr, _ in p.splits]
    logger.info(
        "probe %s: %d rows x %d dims, %d classes, %d fold-runs x %d seeds, train_fraction %.3g, test on %s",
        kind,
        p.X.shape[0],
        p.X.shape[1],
        classes.size,
        len(p.splits),
        len(settings.seeds),
        train_fraction,
        "+".join(s[0] for s in p.spaces),
    )
    null_rows = None
    n_fit = int(np.mean([tr.size for _, _, tr, _ in p.splits]) * train_fraction)
    if use_batched(n_fit, p.X.shape[1], settings, kind):
        results, null_rows = _evaluate_batched(
            p, tasks, train_fraction=train_fraction, classes_K=classes, settings=settings, with_null=with_null
        )
    else:
        results = _evaluate_one_by_one(p, tasks, kind=kind, train_fraction=train_fraction, settings=settings)
    rows = [row for task_rows, _, _ in results for row in task_rows]
    fits = [(seed, r, k, *fit) for (seed, r, k, _), (_, _, fit) in zip(tasks, results, strict=True) if fit]
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
    return frame, fits, None if null_rows is None else _rows_frame(null_rows)


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
    folds; each of ``other_spaces`` is scored on its own labels at its rows of the test fold. ``folds_N``: (N,)
    or (repeats, N), as in :func:`evaluate_probe`."""
    y = np.asarray(y_train_N)
    y_eval = y if y_test_N is None else _as_vector(y_test_N, y.size, "y_test_N")
    classes = np.unique(y)
    rows = []
    other_folds = [_as_fold_matrix(s.folds_N, np.shape(s.y_N)[0], f"{s.name} folds_N") for s in other_spaces]
    for r, k, tr, te in _splits(_as_fold_matrix(folds_N, y.size, "folds_N"), groups_N):
        values, counts = np.unique(y[tr], return_counts=True)
        majority = values[int(np.argmax(counts))]
        tests = [(space, y_eval[te]) for space in test_spaces]
        for s, s_folds in zip(other_spaces, other_folds, strict=True):
            tests.append((s.name, np.asarray(s.y_N)[s_folds[r] == k]))
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
                        "repeat": r,
                        "fold": k,
                        "metric": metric,
                        "value": value,
                        "C": math.nan,
                        "n_train": int(tr.size),
                        "n_test": int(y_test.size),
                    }
                )
    return _rows_frame(rows)


def _null_split(
    p: _Prepared, r: int, k: int, train_idx: np.ndarray, fit: tuple[Pipeline, float], settings: ProbeSettings
) -> list[dict[str, Any]]:
    """Null rows of one fold-run fit by scikit-learn: ``settings.permutations`` fits on the training rows' labels
    permuted (seeded per repeat, fold and permutation), each scored in every space exactly as the real probe."""
    pipe, C = fit
    perms = _permutations(p, r, k, train_idx, settings)
    models = []
    if settings.permutation_c == "fixed":  # the fold-run's scaler and the real probe's C
        scaler = pipe.named_steps["scaler"]
        X_tr = scaler.transform(p.X[train_idx])
        with threadpool_limits(limits=1, user_api="blas"):
            for y_perm in perms.T:
                clf = LogisticRegression(C=C, max_iter=settings.max_iter).fit(X_tr, y_perm)
                models.append((Pipeline([("scaler", scaler), ("clf", clf)]), C))
    else:
        groups = None if p.groups is None else p.groups[train_idx]
        for y_perm in perms.T:
            model, info = fit_probe_pipeline(
                p.X[train_idx], y_perm, settings=settings, seed=settings.seeds[0], groups_N=groups
            )
            models.append((model, info["C"]))
    return _null_rows(p, r, k, train_idx, models)


def permutation_null(
    p: _Prepared, fits: Sequence[tuple[int, int, int, Pipeline, float]], settings: ProbeSettings
) -> pd.DataFrame:
    """The permutation null: rows ``probe = "permutation"`` (``seed`` = permutation index) of ``settings.permutations``
    label permutations per fold-run, through the real probe's pipeline and scoring (every space, re-centring).

    Labels are permuted within the fold-run's training rows only (test rows keep their true labels). With
    ``settings.permutation_c == "fixed"`` (default) each null fit reuses the fold-run's scaler (it never sees
    labels, so permuting them cannot change it) and the C that inner CV chose for the real labels (first seed):
    one fit per permutation instead of a full inner CV. From ``settings.batched_min_size`` training-matrix entries on,
    the null is fit with the real probes of its fold-run (:func:`_evaluate_run_batched`: all permutations in one
    batched call on the same basis, scikit-learn's objective and stopping rule, agreement tested) and this
    function is not called; below it each permutation is one ``LogisticRegression`` fit. This makes the null slightly optimistic
    for the real probe (the null does not get its own best C, which on permuted labels is usually the strongest
    regularisation and lands at chance anyway); ``inner`` repeats the inner CV per permutation (exact, slower).
    :func:`repshift.probes.summary.summarize` turns the rows into a band and a permutation p-value.
    """
    first = settings.seeds[0]
    by_run = {(r, k): (pipe, C) for seed, r, k, pipe, C in fits if seed == first}
    tasks = [(r, k, tr) for r, k, tr, _ in p.splits if (r, k) in by_run]
    logger.info(
        "probe null: %d permutations x %d fold-runs (C %s)",
        settings.permutations,
        len(tasks),
        settings.permutation_c,
    )
    results = _parallel(
        settings,
        (delayed(_null_split)(p, r, k, tr, by_run[(r, k)], settings) for r, k, tr in tasks),
        total=len(tasks),
        desc=f"probe null ({settings.permutations} permutations per fit)",
    )
    return _rows_frame([row for rows in results for row in rows])


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
    """:func:`run_probe_suite`, also returning the logistic probe of every (seed, outer fold) of repeat 0 as
    :class:`FoldProbes` (to score later in more spaces, e.g. another layer, without refitting)."""
    p = _prepare(
        X_train_ND, y_train_N, folds_N, X_test_ND, y_test_N, groups_N, report_within, names, other_spaces
    )

    def run(kind: str, fraction: float = 1.0, with_null: bool = False):
        return _evaluate(
            None,
            None,
            None,
            settings=settings,
            kind=kind,
            train_fraction=fraction,
            prepared=p,
            with_null=with_null,
        )

    fixed_null = bool(settings.permutations) and settings.permutation_c == "fixed"
    frame, fits, null = run("logreg", with_null=fixed_null)
    frames = [frame]
    if settings.permutations:
        frames.append(null if null is not None else permutation_null(p, fits, settings))
    elif settings.control:
        frames.append(run("control")[0])
    if settings.mlp:
        frames.append(run("mlp")[0])
    for fraction in sorted(set(settings.train_fractions)):
        if fraction < 1:  # the full logistic run above is fraction 1.0
            frames.append(run("logreg", fraction)[0])
    paired = [s[0] for s in p.spaces if s[0] in ("same", "other", "other" + RECENTRED)]
    recentred = [dataclasses.replace(s, name=s.name + RECENTRED) for s in other_spaces]
    frames.append(
        majority_baseline(
            p.y,
            folds_N,
            y_test_N=y_test_N,
            groups_N=p.groups,
            test_spaces=paired,
            other_spaces=[*other_spaces, *recentred],
        )
    )
    repeat0 = [(seed, k, pipe, C) for seed, r, k, pipe, C in fits if r == 0]
    return pd.concat(frames, ignore_index=True), FoldProbes.from_fits(repeat0, np.unique(p.y))


def run_probe_suite(*args, **kwargs) -> pd.DataFrame:
    """:func:`fit_probe_suite`'s rows (same arguments): the logistic probe, plus (per settings) the permutation
    null (:func:`permutation_null`; without permutations the single shuffled-label control), the MLP, the
    learning curve and the majority baseline, as one tidy frame (:data:`ROW_COLUMNS`; ``probe`` and
    ``train_fraction`` tell them apart).

    Every fit is made once and scored in every space (``same``, ``X_test_ND``'s ``other`` or each of
    ``other_spaces``); the learning curve reuses the full logistic run for fraction 1.0 instead of refitting it.
    """
    return fit_probe_suite(*args, **kwargs)[0]
