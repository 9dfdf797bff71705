"""The reproduction table: each number the source studies and the original notebooks report, beside what this
run computed in its place (results/reproduction.tsv). A published number with no matching TSV in the run is
listed with an empty ``repshift`` cell, so the table always shows what was and was not reproduced."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from repshift.formats.atomic import atomic_path

log = logging.getLogger(__name__)


COLUMNS = ("study", "quantity", "published", "repshift", "where", "note")


@dataclass(frozen=True)
class Published:
    """One published number and where its counterpart lives: a glob under the results folder, row filters
    (column == value), the value column (``mean`` of a summary, else ``value``) and how rows are reduced."""

    study: str
    quantity: str
    published: str
    where: str
    filters: Mapping[str, object] = field(default_factory=dict)
    column: str = "mean"
    reduce: str = "max"  # max (best feature set) or mean
    note: str = ""


PUBLISHED: tuple[Published, ...] = (
    Published(
        "llava-gemma", "macro-F1, CIFAR-100, SAE features, block 10 (best layer)", "best of 6/10/17 (no table)",
        "sae_features/cifar100-llava-gemma/*/layer-10.probe.tsv", {"metric": "macro_f1", "train_fraction": 0.5},
        note="qualitative in the write-up; repshift: best feature set at train fraction 0.5",
    ),
    Published(
        "llava-gemma", "macro-F1, ImageNet-1k, SAE features, block 6", "0.49",
        "sae_features/imagenet-llava-gemma/*/layer-6.probe.tsv", {"metric": "macro_f1", "train_fraction": 0.5},
        note="the write-up's run was unfinished; repshift uses 10 val images per class",
    ),
    Published(
        "seed notebooks", "cosine of mean SAE codes, Gemma-2-2B vs PaliGemma-2, block 12", "0.77",
        "sae/gemma-vs-paligemma/layer-12.shift.tsv", {"metric": "mean_code_cosine"}, "value", "mean",
        note="original applied the layer-12 SAE to block 11's output and averaged over padded positions",
    ),
    Published(
        "seed notebooks", "cosine of mean SAE codes, block 25", "0.21",
        "sae/gemma-vs-paligemma/layer-25.shift.tsv", {"metric": "mean_code_cosine"}, "value", "mean",
        note="original 'layer 26' was random noise (no SAE for it); its block-25 number is off by one too",
    ),
)  # fmt: skip


def _value(files: Sequence[str], p: Published) -> float | None:
    frame = pd.concat([pd.read_csv(f, sep="\t") for f in files], ignore_index=True)
    for key, want in p.filters.items():
        if key not in frame.columns:
            log.warning("%s: no column %r in %s", p.quantity, key, files[0])
            return None
        frame = frame[frame[key].astype(str) == str(want)]
    column = p.column if p.column in frame.columns else "value"
    if frame.empty or column not in frame.columns:
        return None
    return float(frame[column].max() if p.reduce == "max" else frame[column].mean())


def reproduction_table(
    results: str | os.PathLike, published: Sequence[Published] = PUBLISHED
) -> pd.DataFrame:
    """One row per published number (columns :data:`COLUMNS`); ``repshift`` empty where the run has no match."""
    rows = []
    for p in published:
        files = sorted(glob.glob(str(Path(results) / p.where)))
        value = _value(files, p) if files else None
        note = (
            p.note if value is not None else "; ".join(x for x in (p.note, "not computed in this run") if x)
        )
        rows.append(
            (p.study, p.quantity, p.published, "" if value is None else f"{value:.3f}", p.where, note)
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_reproduction_table(results: str | os.PathLike, out_tsv: str | os.PathLike) -> pd.DataFrame:
    df = reproduction_table(results)
    with atomic_path(out_tsv) as tmp:
        df.to_csv(tmp, sep="\t", index=False, lineterminator="\n")
    return df
