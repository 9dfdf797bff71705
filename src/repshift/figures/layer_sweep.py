"""The layer-sweep figure: shift, transfer and probe panels against layer."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from repshift.figures.style import (
    CONTROL_SERIES,
    LAYER_LABEL,
    MAJORITY_SERIES,
    NULL_SERIES,
    PAGE_WIDTH,
    TABLE_COLUMNS,
    Palette,
    _interval,
    _read,
    _style,
    draw_layer_panel,
    figure_legend,
    fixed_limits,
    save,
    with_colors,
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


#: Probe facets of the layer sweep (one kind of probe per panel, so that bands do not pile up): (transfer,
#: train modality, test modality) -> panel title. Cross-model probes are one facet whatever the modality.
PROBE_FACETS = {
    ("within", "text", "text"): "Probe accuracy: within model, text",
    ("within", "image", "image"): "Probe accuracy: within model, image",
    ("cross-model", None, None): "Probe accuracy: cross-model (train -> test)",
    ("cross-modal", "text", "image"): "Probe accuracy: cross-modal, text -> image",
    ("cross-modal", "image", "text"): "Probe accuracy: cross-modal, image -> text",
}


#: The questions the layer sweep's rows answer, each with its panels (in order) and reference lines.
GROUPS = (
    ("Does the adapted decoder move? (base SAE's codes of identical text tokens)", "shift"),
    ("Does the base model's SAE still fit? (text tokens of text-only inputs)", "transfer"),
    ("What can a linear probe read? (mean over seeds x folds, 95% CI)", "probes"),
)


def probe_facet(r: Mapping) -> str:
    if r["transfer"] == "cross-model":
        return PROBE_FACETS[("cross-model", None, None)]
    key = (r["transfer"], r["train_modality"], r["test_modality"])
    return PROBE_FACETS.get(
        key, f"Probe accuracy: {r['transfer']}, {r['train_modality']} -> {r['test_modality']}"
    )


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


def probe_rows(probes: pd.DataFrame, metric: str = "accuracy", *, faceted: bool = False) -> pd.DataFrame:
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
    if faceted:
        sub["panel"] = [probe_facet(r) for r in sub.to_dict("records")]
    else:
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
        parts.append(probe_rows(_read(probe_paths), faceted=True))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=TABLE_COLUMNS)
    return table.sort_values(["panel", "series", "layer"], kind="stable").reset_index(drop=True)


def group_panels(table: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """(question, panels) per row of the figure: every configured panel of the group, none empty."""
    present = set(table["panel"])
    candidates = {
        "shift": list(SHIFT_PANELS.values()),
        "transfer": list(TRANSFER_PANELS.values()),
        "probes": list(PROBE_FACETS.values()) + sorted(p for p in present if p.startswith("Probe accuracy:")),
    }
    out = []
    for question, key in GROUPS:
        panels = [p for p in dict.fromkeys(candidates[key]) if p in present]
        if panels:
            out.append((question, panels))
    return out


def _refs(panel: str) -> list[float]:
    """Reference lines: 0 and 1 for spliced-loss recovered (zero-ablation and clean), 0 for FVU."""
    if "recovered" in panel:
        return [0.0, 1.0]
    if "FVU" in panel:
        return [0.0, 1.0]
    return [0.0] if "L0" in panel else []


def plot_layer_sweep(table: pd.DataFrame, out_pdf, out_png, *, palette: Palette, title: str) -> None:
    """Rows grouped by question (shift; transfer quality; probes), one legend per row naming each series once."""
    plt = _style()
    groups = group_panels(table) or [("nothing configured", [])]
    ncols = max(1, max(len(p) for _, p in groups))
    fig = plt.figure(figsize=(PAGE_WIDTH, 2.35 * len(groups) + 0.3), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(len(groups), 1))
    for subfig, (question, panels) in zip(subfigs, groups, strict=True):
        axes = np.atleast_1d(subfig.subplots(1, max(1, len(panels)), squeeze=False)[0])
        for ax, panel in zip(axes, panels, strict=True):
            ax.set_title(panel.split(": ", 1)[-1].replace(" (text-only inputs)", ""), fontsize=7)
            ax.set_xlabel("layer L")
            draw_layer_panel(
                ax, table[table["panel"] == panel], palette, ylim=fixed_limits(panel), refs=_refs(panel)
            )
        axes[0].set_ylabel("accuracy" if panels and "accuracy" in panels[0] else "value")
        subfig.suptitle(question, fontsize=8, fontweight="bold", ha="left", x=0.01)
        figure_legend(subfig, axes, loc="outside lower center", ncol=min(4, 6 if ncols > 4 else 4))
    fig.suptitle(title, fontsize=8.5)
    save(fig, out_pdf, out_png)
    plt.close(fig)


def layer_sweep(
    shift_paths,
    transfer_paths,
    probe_paths,
    *,
    out_pdf,
    out_png,
    out_tsv,
    title=None,
    palette=None,
    min_examples: int = MIN_EXAMPLES,
) -> pd.DataFrame:
    palette = palette or Palette()
    table = with_colors(
        layer_sweep_table(shift_paths, transfer_paths, probe_paths, min_examples=min_examples), palette
    )
    plot_layer_sweep(
        table,
        out_pdf,
        out_png,
        palette=palette,
        title=title or f"Layer sweep: base LLM vs adapted decoders; {LAYER_LABEL}",
    )
    write_table(table, out_tsv)
    return table
