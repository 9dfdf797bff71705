"""The SAE-feature classification figure: macro-F1 against training fraction, one panel per (analysis, model,
layer), SAE-feature variants beside raw activations, drawn from the classification rows of
:mod:`repshift.sae_features` in the style of :mod:`repshift.figures`. Kept apart from the analysis module so that a
figure edit reruns only the figure job."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from repshift.sae.class_features import RAW, summarize_rows

FIGURE_COLUMNS = [
    "panel",
    "series",
    "train_fraction",
    "value",
    "lo",
    "hi",
    "analysis",
    "model",
    "layer",
    "color",
]

#: Colours of the SAE-feature variants (poolings in order of appearance; raw activations black).
VARIANT_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")


def figure_table(rows: pd.DataFrame, metric: str = "macro_f1") -> pd.DataFrame:
    """The numbers the figure draws: one row per panel (analysis / model / layer) x series x fraction."""
    s = summarize_rows(rows)
    s = s[s["metric"] == metric]
    multi = rows["analysis"].nunique() > 1 if "analysis" in rows else False
    panel = [
        (f"{a}: " if multi else "") + f"{m}, layer {int(layer)}"
        for a, m, layer in zip(s["analysis"], s["model"], s["layer"], strict=True)
    ]
    table = pd.DataFrame(
        {
            "panel": panel,
            "series": s["features"].to_numpy(),
            "train_fraction": s["train_fraction"].to_numpy(),
            "value": s["mean"].to_numpy(),
            "lo": s["ci_low"].to_numpy(),
            "hi": s["ci_high"].to_numpy(),
            "analysis": s["analysis"].to_numpy(),
            "model": s["model"].to_numpy(),
            "layer": s["layer"].astype(int).to_numpy(),
        }
    )
    table["color"] = [_series_style(x, _poolings(table))["color"] for x in table["series"]]
    return table.sort_values(
        ["analysis", "model", "layer", "series", "train_fraction"], kind="stable"
    ).reset_index(drop=True)[FIGURE_COLUMNS]


def _poolings(table: pd.DataFrame) -> list[str]:
    return sorted({s.removesuffix(" >0") for s in table["series"] if s != RAW})


def with_colors(table: pd.DataFrame, palette) -> pd.DataFrame:
    """``table`` with its panel titles' model colour (``model_color``); the ``color`` column is the variant's."""
    if not len(table):
        return table
    return table.assign(model_color=[palette.model_color(m) for m in table["model"]])


def _series_style(series: str, poolings: list[str]) -> dict[str, Any]:
    if series == RAW:
        return {"color": "#000000", "ls": "-", "marker": "s", "lw": 2.0}
    base = series.removesuffix(" >0")
    return {
        "color": VARIANT_COLORS[poolings.index(base) % len(VARIANT_COLORS)],
        "ls": "--" if series.endswith(" >0") else "-",
        "marker": "o" if not series.endswith(" >0") else "^",
        "lw": 1.5,
    }


def plot_figure(table: pd.DataFrame, *, out_pdf, out_png, metric_label: str = "macro-F1 (test)") -> None:
    """One panel per (analysis, model, layer): the metric against training fraction, one line per feature
    set (colour: pooling; dashed: binarised), raw activations in black, 95% intervals as error bars (dodged
    sideways so that overlapping series stay readable)."""
    from repshift.figures.style import _style
    from repshift.formats.atomic import atomic_path

    plt = _style()
    panels = list(dict.fromkeys(table["panel"])) or ["no SAE-feature analysis configured"]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    legend_h, title_h = 0.5, 0.35
    height = 2.1 * nrows + legend_h + title_h
    fig, axes = plt.subplots(nrows, ncols, figsize=(7.2, height), squeeze=False, sharex=True, sharey=True)
    poolings = _poolings(table)
    handles = {}
    for ax, panel in zip(axes.flat, panels, strict=False):
        sub = table[table["panel"] == panel]
        color = sub["model_color"].iloc[0] if "model_color" in sub and len(sub) else "black"
        ax.set_title(panel, color=color)
        ax.set_ylim(0, 1.02)
        if sub.empty:
            ax.text(
                0.5, 0.5, "not configured", ha="center", va="center", transform=ax.transAxes, color="grey"
            )
            continue
        series = sorted(set(sub["series"]) - {RAW}) + ([RAW] if RAW in set(sub["series"]) else [])
        xs = np.sort(sub["train_fraction"].unique())
        step = float(np.diff(xs).min()) if xs.size > 1 else 0.1
        for i, name in enumerate(series):
            g = sub[sub["series"] == name].sort_values("train_fraction")
            style = _series_style(name, poolings)
            # a small sideways dodge (at most a tenth of the gap between fractions) keeps bars apart
            x = g["train_fraction"].to_numpy() + (i - (len(series) - 1) / 2) * 0.1 * step / len(series)
            y = g["value"].to_numpy()
            err = np.vstack([y - g["lo"].to_numpy(), g["hi"].to_numpy() - y])
            err = np.where(np.isfinite(err), np.clip(err, 0, None), 0)
            container = ax.errorbar(x, y, yerr=err, ms=3.5, capsize=1.5, elinewidth=0.8, label=name, **style)
            handles.setdefault(name, container)
        ax.set_xticks(xs)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("training fraction (per class)")
    for ax in axes[:, 0]:
        ax.set_ylabel(metric_label)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="lower center",
            ncol=min(len(handles), 5),
            fontsize=6.5,
            bbox_to_anchor=(0.5, 0.01),
        )
    fig.suptitle(
        "SAE-feature vs raw-activation classification on image tokens "
        "(dashed: binarised; black: raw activations; bars: 95% CI)",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, legend_h / height, 1, 1 - 0.1 / height))
    for out in (out_pdf, out_png):
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=Path(out).suffix.lstrip("."))
    plt.close(fig)
