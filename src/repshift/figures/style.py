"""Shared figure style, axis labels, tidy-table writing and the generic panel plotter."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from repshift.formats.atomic import atomic_path

log = logging.getLogger(__name__)


LAYER_LABEL = "layer L (output of decoder block L, 0-based)"


VISION_LAYER_LABEL = "layer L (output of vision-tower block L, 0-based)"


TABLE_COLUMNS = ["panel", "series", "layer", "value", "lo", "hi"]


def _read(paths: Iterable[str | Path]) -> pd.DataFrame:
    frames = [pd.read_csv(p, sep="\t") for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _interval(g: pd.DataFrame) -> tuple[float, float, float]:
    """Mean and 95% corrected repeated-CV interval of one series at one layer (as probes.summarize reports it)."""
    from repshift.probes.summary import run_interval

    v = g["value"].to_numpy(dtype=float)
    if "n_train" not in g or "n_test" not in g:
        return float(np.nanmean(v)), math.nan, math.nan
    if "fold" not in g:  # no fold-runs to average seeds within: every score is its own run
        g = g.assign(fold=np.arange(len(g)))
    return run_interval(g)[:3]  # over distinct (repeat, fold) runs, seeds averaged within a run


def _style():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "font.size": 9,
            "axes.titlesize": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "legend.fontsize": 7,
            "legend.frameon": False,
            "pdf.fonttype": 42,
        }
    )
    return plt


def plot_panels(
    table: pd.DataFrame,
    panels: Sequence[str],
    out_pdf,
    out_png,
    *,
    title: str,
    ncols: int = 3,
    vision_panels: Collection[str] | None = None,
) -> None:
    """One line per series and panel, with interval bands; control (dashed) and majority (dotted) reference lines.
    ``vision_panels``: panels whose layer axis is a vision tower's (default: panels naming "vision")."""
    plt = _style()
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 4.6 * nrows), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, panel in zip(axes.flat, panels, strict=False):
        sub = table[table["panel"] == panel]
        ax.set_title(panel)
        vision = "vision" in panel if vision_panels is None else panel in vision_panels
        ax.set_xlabel(VISION_LAYER_LABEL if vision else LAYER_LABEL)
        if sub.empty:
            ax.text(
                0.5, 0.5, "not configured", ha="center", va="center", transform=ax.transAxes, color="grey"
            )
            continue
        refs = {
            CONTROL_SERIES: ("--", "dimgrey"),
            NULL_SERIES: ("--", "dimgrey"),
            MAJORITY_SERIES: (":", "black"),
        }
        main = sorted(x for x in sub["series"].unique() if x not in refs)
        for i, series in enumerate(main + [x for x in refs if x in set(sub["series"])]):
            g = sub[sub["series"] == series].sort_values("layer")
            if series in refs:
                style, color = refs[series]
                ax.plot(g["layer"], g["value"], style, lw=1.2, color=color, label=series)
                if series == NULL_SERIES and (g["hi"] > g["lo"]).any():
                    ax.fill_between(g["layer"], g["lo"], g["hi"], color=color, alpha=0.12, lw=0)
                continue
            color = colors(i % 10)
            ax.plot(g["layer"], g["value"], "-o", ms=3, lw=1.6, color=color, label=series)
            if (g["hi"] > g["lo"]).any():
                ax.fill_between(g["layer"], g["lo"], g["hi"], color=color, alpha=0.18, lw=0)
        layers = sorted(sub["layer"].unique())
        ax.set_xticks(layers if len(layers) <= 14 else layers[:: max(1, len(layers) // 13)])
        if "cosine" in panel or "Jaccard" in panel or "accuracy" in panel:
            ax.set_ylim(0 if "accuracy" in panel else -0.02, 1.02)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=6.5)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # keep the title above the panel titles
    for out in (out_pdf, out_png):
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=Path(out).suffix.lstrip("."))
    plt.close(fig)


def write_table(table: pd.DataFrame, out_tsv) -> None:
    with atomic_path(out_tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


CONTROL_SERIES = "shuffled-label control"


NULL_SERIES = "permutation null (95% band)"


MAJORITY_SERIES = "majority baseline"
