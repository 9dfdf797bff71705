"""The layer-sweep figure: shift, transfer and probe panels against layer."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from repshift.figures.style import (
    CONTROL_SERIES,
    MAJORITY_SERIES,
    NULL_SERIES,
    TABLE_COLUMNS,
    _interval,
    _read,
    plot_panels,
    write_table,
)

log = logging.getLogger(__name__)


SHIFT_PANELS = {
    "token_cosine": "SAE shift: per-token code cosine",
    "mean_code_cosine": "SAE shift: cosine of mean codes",
    "jaccard": "SAE shift: Jaccard of active latents",
}


TRANSFER_PANELS = {
    "fvu": "SAE transfer: FVU (text-only inputs)",
    "l0": "SAE transfer: L0 (text-only inputs)",
    "cosine": "SAE transfer: cos(x, x_hat) (text-only inputs)",
    "ce_loss_recovered": "SAE transfer: spliced-loss recovered (text-only inputs)",
}


PROBE_PANELS = {
    "within": "Probe accuracy: within model (95% CI)",
    "transfer": "Probe accuracy: cross-model / cross-modal (95% CI)",
}


#: Default of config ``figures.min_examples``: shift and spliced-loss series on fewer examples are not drawn.
MIN_EXAMPLES = 50


def _with_n(name: str, g: pd.DataFrame, min_examples: int) -> str | None:
    """``name (n=N)`` for a series computed on N examples; None when N < ``min_examples`` (not drawn)."""
    if "n" not in g or g["n"].isna().all():
        return name
    n = int(g["n"].max())
    return None if n < min_examples else f"{name} (n={n})"


def _bounds(g: pd.DataFrame, v: float) -> tuple[float, float]:
    """The bootstrap interval of a row (``lo``, ``hi``) when the table has one, else the value itself."""
    if "lo" in g and "hi" in g and not g[["lo", "hi"]].isna().any(axis=None):
        return float(g["lo"].iloc[0]), float(g["hi"].iloc[0])
    return v, v


def shift_rows(shift: pd.DataFrame, min_examples: int = MIN_EXAMPLES) -> pd.DataFrame:
    """Shift metrics per comparison and layer with their bootstrap intervals; comparisons on fewer than
    ``min_examples`` examples are left out (the legend shows each drawn series' n)."""
    rows = []
    for metric, panel in SHIFT_PANELS.items():
        sub = shift[shift["metric"] == metric]
        for (comparison, layer), g in sub.groupby(["comparison", "layer"]):
            name = _with_n(comparison, g, min_examples)
            if name is None:
                continue
            v = float(g["value"].iloc[0])
            rows.append((panel, name, int(layer), v, *_bounds(g, v)))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def transfer_rows(transfer: pd.DataFrame, min_examples: int = MIN_EXAMPLES) -> pd.DataFrame:
    """Transfer metrics (and spliced-loss recovered) on text tokens of text-only inputs, one series per model
    and SAE, and per dataset when several are encoded (prompt sets are never averaged with captions)."""
    rows = []
    sub = transfer[transfer["position_kind"] == "text"]
    per_dataset = sub["dataset"].nunique() > 1 if "dataset" in sub else False
    one_sae = sub["sae"].nunique() <= 1
    for metric, panel in TRANSFER_PANELS.items():
        for (sae, model, dataset, layer), g in sub[sub["metric"] == metric].groupby(
            ["sae", "model", "dataset", "layer"]
        ):
            v = float(g["value"].mean())
            series = model + (f" [{dataset}]" if per_dataset else "") + ("" if one_sae else f" ({sae})")
            series = _with_n(series, g, min_examples)  # spliced loss carries n (prompts) and lo/hi
            if series is not None:
                rows.append((panel, series, int(layer), v, *_bounds(g, v)))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def probe_series_name(r: Mapping) -> str:
    if r["transfer"] == "within":
        return f"{r['train_model']} [{r['train_modality']}]"
    if r["transfer"] == "cross-model":
        return f"{r['train_model']} -> {r['test_model']} [{r['train_modality']}]"
    return f"{r['train_model']} [{r['train_modality']} -> {r['test_modality']}]"


def probe_rows(probes: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Per series and layer: mean over folds x seeds with its 95% corrected repeated-CV interval (full training
    folds only; learning-curve rows are left out); the permutation null (mean and 95% band of the permutation
    means), shuffled-label control (older tables) and majority lines per panel."""
    rows = []
    sub = probes[probes["metric"] == metric].copy()
    if "test_space" in sub:  # re-centred cross-space scores are a separate check, not a series here
        sub = sub[~sub["test_space"].astype(str).str.endswith("-recentred")]
    if "train_fraction" in sub:
        sub = sub[np.isclose(sub["train_fraction"], 1.0)]
    sub["series"] = [probe_series_name(r) for r in sub.to_dict("records")]
    sub["panel"] = np.where(sub["transfer"] == "within", PROBE_PANELS["within"], PROBE_PANELS["transfer"])
    for (panel, probe, series, layer), g in sub.groupby(["panel", "probe", "series", "layer"]):
        if probe not in ("control", "majority", "permutation"):
            name = series if probe == "logreg" else f"{series} [{probe}]"
            rows.append((panel, name, int(layer), *_interval(g)))
    for (panel, layer), g in sub[sub["probe"] == "permutation"].groupby(["panel", "layer"]):
        # each permutation's mean over fold-runs (per series), pooled over the panel's series
        perm_means = g.groupby(["series", "seed"])["value"].mean().to_numpy(dtype=float)
        low, high = np.quantile(perm_means, [0.025, 0.975])
        rows.append((panel, NULL_SERIES, int(layer), float(perm_means.mean()), float(low), float(high)))
    for (panel, probe, layer), g in sub[sub["probe"].isin(["control", "majority"])].groupby(
        ["panel", "probe", "layer"]
    ):
        name = CONTROL_SERIES if probe == "control" else MAJORITY_SERIES
        v = float(g["value"].mean())
        rows.append((panel, name, int(layer), v, v, v))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def layer_sweep_table(
    shift_paths: Sequence,
    transfer_paths: Sequence,
    probe_paths: Sequence,
    *,
    min_examples: int = MIN_EXAMPLES,
) -> pd.DataFrame:
    parts = []
    if shift_paths:
        parts.append(shift_rows(_read(shift_paths), min_examples))
    if transfer_paths:
        parts.append(transfer_rows(_read(transfer_paths), min_examples))
    if probe_paths:
        parts.append(probe_rows(_read(probe_paths)))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=TABLE_COLUMNS)
    return table.sort_values(["panel", "series", "layer"], kind="stable").reset_index(drop=True)


def layer_sweep(
    shift_paths,
    transfer_paths,
    probe_paths,
    *,
    out_pdf,
    out_png,
    out_tsv,
    title=None,
    min_examples: int = MIN_EXAMPLES,
) -> pd.DataFrame:
    table = layer_sweep_table(shift_paths, transfer_paths, probe_paths, min_examples=min_examples)
    panels = list(SHIFT_PANELS.values()) + list(TRANSFER_PANELS.values()) + list(PROBE_PANELS.values())
    plot_panels(
        table,
        panels,
        out_pdf,
        out_png,
        ncols=4,
        title=title or "repshift layer sweep: base LLM vs adapted decoder",
    )
    write_table(table, out_tsv)
    return table
