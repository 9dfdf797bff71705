"""The manifest format: one TSV row per example plus a JSON sidecar; fold assignment; reading and checks."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from repshift.formats.atomic import atomic_path, write_json

logger = logging.getLogger(__name__)


CAPTION_SEP = " ||| "


MANIFEST_COLUMNS = (
    "example_id",
    "image_id",
    "group",
    "modality",
    "file",
    "text",
    "captions",
    "label",
    "label_name",
    "transform",
    "fold",
)


_INT_COLUMNS = ("image_id", "group", "label", "fold", "pair_id")


#: Outer-CV repeats: repeat 0's folds are the ``fold`` column, repeat r >= 1's the ``fold_r<r>`` column.
REPEAT_FOLD_PREFIX = "fold_r"


def fold_column(repeat: int) -> str:
    """Manifest column of outer-CV repeat ``repeat`` (``fold`` for repeat 0, ``fold_r<repeat>`` after it)."""
    return "fold" if repeat == 0 else f"{REPEAT_FOLD_PREFIX}{repeat}"


def fold_columns(columns: Sequence[str]) -> list[str]:
    """The fold columns among ``columns`` in repeat order (``fold``, ``fold_r1``, ...); raises on a gap."""
    repeats = sorted(
        int(c[len(REPEAT_FOLD_PREFIX) :])
        for c in columns
        if c.startswith(REPEAT_FOLD_PREFIX) and c[len(REPEAT_FOLD_PREFIX) :].isdigit()
    )
    if repeats != list(range(1, len(repeats) + 1)):
        raise ValueError(f"repeat fold columns must be fold_r1..fold_rR without gaps, got repeats {repeats}")
    return [fold_column(r) for r in range(len(repeats) + 1)]


def _counts(df: pd.DataFrame, label_names: Sequence[str]) -> dict[str, Any]:
    per_class = {
        name: {
            "rows": int((df["label"] == k).sum()),
            "images": int(df.loc[df["label"] == k, "group"].nunique()),
        }
        for k, name in enumerate(label_names)
    }
    per_fold = {
        str(f): {
            name: int(((df["fold"] == f) & (df["label"] == k)).sum()) for k, name in enumerate(label_names)
        }
        for f in sorted(df["fold"].unique())
    }
    per_modality = {str(m): int(c) for m, c in df["modality"].value_counts().sort_index().items()}
    return {"per_class": per_class, "per_fold": per_fold, "per_modality": per_modality}


def assign_folds(labels_N: Sequence[int], groups_N: Sequence[int], *, n_folds: int, seed: int) -> np.ndarray:
    """Fold index per row: StratifiedGroupKFold(shuffle, random_state=seed) on ``groups_N``.

    Deterministic, and independent of row order (sklearn works on sorted unique groups and labels).
    Every group lands in exactly one fold.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels_N = np.asarray(labels_N)
    groups_N = np.asarray(groups_N)
    if labels_N.shape != groups_N.shape or labels_N.ndim != 1:
        raise ValueError(f"labels {labels_N.shape} and groups {groups_N.shape} must be 1-D of equal length")
    n_groups = len(np.unique(groups_N))
    if n_groups < n_folds:
        raise ValueError(f"{n_folds} folds requested but only {n_groups} groups (base images); lower folds")
    counts = {int(lab): len(np.unique(groups_N[labels_N == lab])) for lab in np.unique(labels_N)}
    if min(counts.values()) < n_folds:
        logger.warning("fewer groups than folds for some labels (groups per label: %s)", counts)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds_N = np.full(len(labels_N), -1, dtype=np.int64)
    for fold, (_, test_idx) in enumerate(splitter.split(np.zeros(len(labels_N)), labels_N, groups_N)):
        folds_N[test_idx] = fold
    assert (folds_N >= 0).all()
    return folds_N


def repeat_seed(seed: int, repeat: int) -> int:
    """The StratifiedGroupKFold seed of outer-CV repeat ``repeat`` (repeat 0 uses ``seed`` itself)."""
    if repeat == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(repeat)]).generate_state(1)[0])


def add_repeat_folds(df: pd.DataFrame, *, repeats: int, seed: int) -> pd.DataFrame:
    """``df`` with columns ``fold_r1 .. fold_r<repeats-1>``: each repeat's own grouped, stratified outer folds
    (:func:`assign_folds` with the number of folds of ``fold`` and seed :func:`repeat_seed`); ``fold`` is kept as
    repeat 0. Existing repeat columns are replaced. A manifest with fewer than 2 folds (a one-prompt set) gets
    none: there is nothing to repeat."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1 (outer-CV repeats), got {repeats!r}")
    out = df.drop(columns=[c for c in fold_columns(df.columns) if c != "fold"])
    n_folds = int(out["fold"].nunique())
    if n_folds < 2:
        return out
    labels, groups = out["label"].to_numpy(), out["group"].to_numpy()
    for r in range(1, repeats):
        out[fold_column(r)] = assign_folds(labels, groups, n_folds=n_folds, seed=repeat_seed(seed, r))
    return out


def add_repeat_folds_file(path: str | os.PathLike, *, repeats: int, seed: int) -> None:
    """Rewrite a written manifest (TSV + sidecar) with :func:`add_repeat_folds`; the sidecar records
    ``repeats``. Manifests are small: re-reading costs nothing next to building them."""
    df, meta = read_manifest(path)
    df = add_repeat_folds(df, repeats=repeats, seed=seed)
    write_manifest(df, meta | {"repeats": len(fold_columns(df.columns))}, path)


def check_manifest(df: pd.DataFrame) -> None:
    """Invariants every manifest satisfies; raises ValueError naming the first violation."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}")
    dup = df.loc[df["example_id"].duplicated(), "example_id"]
    if len(dup):
        raise ValueError(f"manifest has duplicate example_id {dup.iloc[0]!r}")
    for column in fold_columns(df.columns):
        leaks = df.groupby("group")[column].nunique()
        if (leaks > 1).any():
            raise ValueError(f"group {leaks[leaks > 1].index[0]} appears in more than one fold of {column!r}")
    bad_mod = set(df["modality"]) - {"text", "image"}
    if bad_mod:
        raise ValueError(f"manifest modality must be text or image, got {sorted(bad_mod)}")
    names = df.groupby("label")["label_name"].nunique()
    if (names > 1).any():
        raise ValueError(f"label {names[names > 1].index[0]} has several label_names")


def sidecar_path(out_tsv: str | os.PathLike) -> Path:
    return Path(out_tsv).with_suffix(".json")


def write_manifest(df: pd.DataFrame, meta: Mapping[str, Any], out_tsv: str | os.PathLike) -> None:
    """Write the TSV (UTF-8, tab-separated, header) and its JSON sidecar, each atomically."""
    check_manifest(df)
    out_tsv = Path(out_tsv)
    write_json(sidecar_path(out_tsv), dict(meta) | {"columns": list(df.columns)})
    with atomic_path(out_tsv) as tmp:
        df.to_csv(tmp, sep="\t", index=False, encoding="utf-8", lineterminator="\n")
    logger.info("wrote %s (%d rows) and %s", out_tsv, len(df), sidecar_path(out_tsv).name)


def read_manifest(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a manifest TSV and its sidecar; text stays text (no NaN for "" or "NA"), ids stay ints."""
    path = Path(path)
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"manifest sidecar not found: {side} (written next to {path.name})")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
    for col in (*_INT_COLUMNS, *fold_columns(df.columns)[1:]):
        if col in df.columns:
            df[col] = df[col].astype(np.int64)
    meta = json.loads(side.read_text(encoding="utf-8"))
    check_manifest(df)
    return df, meta
