"""Saved probes (safetensors + JSON, no pickle): the final probe, the per-fold probes, cross-layer scoring."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors.numpy import load_file, save_file
from sklearn.pipeline import Pipeline

from repshift.formats.atomic import atomic_path, write_json
from repshift.formats.provenance import provenance
from repshift.probes.cv import (
    ROW_COLUMNS,
    ProbeSettings,
    _as_features,
    _as_vector,
    _metrics,
    _rows_frame,
    check_same_width,
    fit_probe_pipeline,
    fit_probe_pipelines_batched,
    use_batched,
)

logger = logging.getLogger(__name__)


#: On-disk format tag of :meth:`FittedProbe.save`.
PROBE_FORMAT = "repshift-probe-v1"


#: On-disk format tag of :meth:`FoldProbes.save`.
FOLD_PROBES_FORMAT = "repshift-fold-probes-v1"


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
    if use_batched(*X.shape, settings):
        ((pipe, info),), _ = fit_probe_pipelines_batched(
            X, y, settings=settings, seeds=[seed], groups_N=groups
        )
    else:
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
