"""One visual language for every figure: a colour and line style per model, comparison and control (the
:class:`Palette`), shared rcParams, axis labels, tidy-table writing and the generic panel plotter.

Colours come from the config's names, never from the order series happen to be drawn in: models in config order
take the colour-blind-safe Okabe-Ito colours in turn; a comparison takes its adapted model's colour and its
dataset's line style; a probe series takes the colour of the model it is scored on; controls are grey and dashed,
the majority baseline black and dotted. So orange means the same model in every panel of every figure.
"""

from __future__ import annotations

import logging
import math
import re
import zlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from repshift.formats.atomic import atomic_path

log = logging.getLogger(__name__)


LAYER_LABEL = "layer L (output of decoder block L, 0-based)"


VISION_LAYER_LABEL = "layer L (output of vision-tower block L, 0-based)"


TABLE_COLUMNS = ["panel", "series", "layer", "value", "lo", "hi"]


CONTROL_SERIES = "shuffled-label control"
NULL_SERIES = "permutation null (95% band)"


MAJORITY_SERIES = "majority baseline"


#: Okabe & Ito's colour-blind-safe palette (yellow left out: unreadable on white), then two of Paul Tol's.
MODEL_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#882255", "#44AA99")
#: Line styles per dataset, in config order (a comparison on the first dataset is solid); seven before one repeats.
DATASET_LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)))
CONTROL_COLOR, MAJORITY_COLOR, UNKNOWN_COLORS = (
    "#7F7F7F",
    "#000000",
    ("#999933", "#117733", "#332288", "#AA4499"),
)


@dataclass(frozen=True)
class SeriesStyle:
    """How one series is drawn: colour (hex), line style and marker."""

    color: str
    ls: str | tuple = "-"  # a matplotlib line style: name or (offset, dash pattern)
    marker: str | None = "o"

    def kw(self) -> dict[str, Any]:
        return {"color": self.color, "ls": self.ls, "marker": self.marker}


CONTROL_STYLE = SeriesStyle(CONTROL_COLOR, "--", None)
MAJORITY_STYLE = SeriesStyle(MAJORITY_COLOR, ":", None)


@dataclass(frozen=True)
class Palette:
    """The registry: model names (config order), dataset names (config order) and comparison -> (adapted model,
    dataset). Build it with :meth:`from_config` (workflow) or :meth:`from_params` (a step's ``palette`` param)."""

    models: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    comparisons: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Palette:
        comparisons = {
            name: (str(c["adapted"]), str(c.get("dataset", "")))
            for name, c in (cfg.get("comparisons") or {}).items()
        }
        return cls(tuple(cfg.get("models") or {}), tuple(cfg.get("datasets") or {}), comparisons)

    def to_params(self) -> dict[str, Any]:
        """Plain values for a rule's ``params:`` (a changed palette reruns the figures)."""
        return {
            "models": list(self.models),
            "datasets": list(self.datasets),
            "comparisons": {k: list(v) for k, v in self.comparisons.items()},
        }

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> Palette:
        if not params:
            return cls()
        comparisons = {k: (str(v[0]), str(v[1])) for k, v in (params.get("comparisons") or {}).items()}
        return cls(tuple(params.get("models", ())), tuple(params.get("datasets", ())), comparisons)

    def model_color(self, model: str) -> str:
        if model in self.models:
            return MODEL_COLORS[self.models.index(model) % len(MODEL_COLORS)]
        # not in the config (a test, a figure drawn by hand): a stable colour from the name itself
        return UNKNOWN_COLORS[zlib.crc32(model.encode()) % len(UNKNOWN_COLORS)]

    def dataset_ls(self, dataset: str) -> str:
        if dataset in self.datasets:
            return DATASET_LINESTYLES[self.datasets.index(dataset) % len(DATASET_LINESTYLES)]
        return "-"

    def _mentioned(self, series: str, names: Iterable[str]) -> list[str]:
        """Names occurring in ``series`` as whole words, in order of appearance."""
        hits = []
        for name in names:
            m = re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", series)
            if m:
                hits.append((m.start(), name))
        return [n for _, n in sorted(hits)]

    def style(self, series: str) -> SeriesStyle:
        """The style of a series named as the figure tables name them: a comparison; ``model``;
        ``model [dataset]``; a probe series ``train -> test [modality]`` (colour of the model scored on; cross-model
        dashed; image-trained probes with square markers); the control or majority lines."""
        series = re.sub(r" \(n=[^)]*\)$", "", series)  # a series drawn with its n keeps its colour
        if series in (CONTROL_SERIES, NULL_SERIES):
            return CONTROL_STYLE
        if series == MAJORITY_SERIES:
            return MAJORITY_STYLE
        if series in self.comparisons:
            adapted, dataset = self.comparisons[series]
            return SeriesStyle(self.model_color(adapted), self.dataset_ls(dataset), "o")
        models = self._mentioned(series, self.models) or [series.split(" ")[0]]
        datasets = self._mentioned(series, self.datasets)
        ls = self.dataset_ls(datasets[0]) if datasets else ("--" if " -> " in series.split("[")[0] else "-")
        marker = "s" if re.search(r"\[image", series) else "o"
        return SeriesStyle(self.model_color(models[-1]), ls, marker)

    def color(self, series: str) -> str:
        return self.style(series).color


def layer_color(layer: int, n_layers: int) -> str:
    """Sequential colour of a layer (viridis, early dark, late light), the same in every per-layer figure."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    return to_hex(colormaps["viridis"](0.9 * layer / max(1, n_layers - 1)))


def with_colors(table: pd.DataFrame, palette: Palette, column: str = "series") -> pd.DataFrame:
    """``table`` with a ``color`` column: the palette's colour of each row's series."""
    colors = {s: palette.color(str(s)) for s in table[column].unique()} if len(table) else {}
    return table.assign(color=table[column].map(colors) if len(table) else pd.Series(dtype=str))


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


#: Figure width of a two-column figure in a paper (inches); type sizes below are meant for it at 100%.
PAGE_WIDTH = 7.2


def _style():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 200,
            "font.size": 7.5,
            "axes.titlesize": 7.5,
            "axes.labelsize": 7,
            "xtick.labelsize": 6.5,
            "ytick.labelsize": 6.5,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "grid.linewidth": 0.5,
            "lines.linewidth": 1.2,
            "lines.markersize": 3,
            "legend.fontsize": 6.5,
            "legend.frameon": False,
            "figure.titlesize": 8.5,
            "pdf.fonttype": 42,
        }
    )
    return plt


def robust_limits(
    values, refs: Sequence[float] = (), k: float = 3.0, pad: float = 0.06
) -> tuple[float, float]:
    """Axis limits covering every value within Tukey's far fences (``k`` IQRs beyond the quartiles) and the
    reference lines, so that one outlier cannot flatten the rest (it is marked at the edge instead)."""
    v = np.asarray([x for x in np.ravel(values) if np.isfinite(x)], dtype=float)
    keep = list(refs)
    if v.size:
        q1, q3 = np.percentile(v, [25, 75])
        iqr = max(q3 - q1, 0.05 * max(abs(q1), abs(q3)), 1e-9)
        keep += list(v[(v >= q1 - k * iqr) & (v <= q3 + k * iqr)])
    if not keep:
        return 0.0, 1.0
    lo, hi = float(min(keep)), float(max(keep))
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    return lo - pad * span, hi + pad * span


def mark_outliers(ax, x, y, limits: tuple[float, float], color: str) -> int:
    """Draw values beyond ``limits`` as a triangle at the axis edge with the value beside it; returns how many."""
    lo, hi = limits
    n = 0
    for xi, yi in zip(x, y, strict=True):
        if not np.isfinite(yi) or lo <= yi <= hi:
            continue
        edge, marker, va = (hi, "^", "top") if yi > hi else (lo, "v", "bottom")
        ax.plot([xi], [edge], marker=marker, ms=5, color=color, clip_on=False, zorder=5, ls="none")
        ax.annotate(f"{yi:.3g}", (xi, edge), xytext=(3, -2 if va == "top" else 2), textcoords="offset points",
                    fontsize=5.5, color=color, va=va, ha="left")  # fmt: skip
        n += 1
    return n


def draw_series(ax, g: pd.DataFrame, name: str, style: SeriesStyle, *, dx: float = 0.0, limits=None) -> None:
    """One series against layer: a line (reference series: a plain line), its interval band, outliers at the edge."""
    x = g["layer"].to_numpy(dtype=float) + dx
    y = g["value"].to_numpy(dtype=float)
    if limits is not None:
        mark_outliers(ax, x, y, limits, style.color)
        y = np.where((y < limits[0]) | (y > limits[1]), np.nan, y)
    ref = style.marker is None
    ax.plot(x, y, ls=style.ls, marker=style.marker, color=style.color, lw=1.0 if ref else 1.3,
            ms=3, label=name, zorder=2 if ref else 3, alpha=0.95)  # fmt: skip
    band = not ref or name == NULL_SERIES  # the permutation null is drawn as its 95% band
    if band and {"lo", "hi"} <= set(g):
        lo = pd.to_numeric(g["lo"], errors="coerce").to_numpy(dtype=float)  # rows without an interval: NaN
        hi = pd.to_numeric(g["hi"], errors="coerce").to_numpy(dtype=float)
        if (hi > lo).any():
            ax.fill_between(x, lo, hi, color=style.color, alpha=0.15, lw=0)


def draw_layer_panel(
    ax, sub: pd.DataFrame, palette: Palette, *, ylim=None, refs: Sequence[float] = ()
) -> None:
    """Every series of one panel against layer. Series are dodged sideways by a few hundredths of a layer so that
    lines sitting on the same value (e.g. cosine 1.0) stay visible; ``ylim`` fixed, or robust to outliers."""
    limits = ylim or robust_limits(sub["value"].to_numpy(dtype=float), refs)
    for y in refs:
        ax.axhline(y, color="black", lw=0.6, alpha=0.6, zorder=1)
    refs_named = [s for s in (NULL_SERIES, CONTROL_SERIES, MAJORITY_SERIES) if s in set(sub["series"])]
    main = [s for s in dict.fromkeys(sub["series"]) if s not in refs_named]
    main = sorted(main, key=lambda s: (palette.models.index(m) if (m := _model_of(s, palette)) else 99, s))
    for i, name in enumerate(main + refs_named):
        g = sub[sub["series"] == name].sort_values("layer")
        dx = 0.05 * (i - (len(main) - 1) / 2) if name in main and len(main) > 1 else 0.0
        draw_series(ax, g, name, palette.style(name), dx=dx, limits=None if ylim else limits)
    ax.set_ylim(*limits)
    layers = sorted(sub["layer"].unique())
    ax.set_xticks(layers if len(layers) <= 14 else layers[:: max(1, len(layers) // 13)])
    ax.xaxis.set_major_formatter("{x:.0f}")


def _model_of(series: str, palette: Palette) -> str | None:
    hits = palette._mentioned(series, palette.models)
    return hits[-1] if hits else None


def figure_legend(target, axes, **kw) -> None:
    """One legend on ``target`` (a figure, subfigure or spare axes) naming each series of ``axes`` once."""
    handles, labels = {}, []
    for ax in np.ravel(axes):
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles and not label.startswith("_"):
                handles[label] = h
                labels.append(label)
    if handles:
        target.legend([handles[x] for x in labels], labels, **{"handlelength": 3.0, **kw})


def save(fig, out_pdf, out_png) -> None:
    for out in (out_pdf, out_png):
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=Path(out).suffix.lstrip("."), bbox_inches="tight")


def fixed_limits(panel: str) -> tuple[float, float] | None:
    """Limits of bounded scores (accuracy in [0, 1], cosine and Jaccard at most 1); None: robust limits."""
    if "accuracy" in panel:
        return (0.0, 1.03)
    if "cosine" in panel or "Jaccard" in panel or "cos(" in panel:
        return (-0.03, 1.03)
    return None


def plot_panels(
    table: pd.DataFrame,
    panels: Sequence[str],
    out_pdf,
    out_png,
    *,
    title: str,
    ncols: int = 3,
    vision_panels: Collection[str] | None = None,
    palette: Palette | None = None,
) -> None:
    """One line per series and panel with interval bands, the control (grey dashed) and majority (black dotted)
    lines, one figure legend (in the spare grid cell when there is one, else below)."""
    plt = _style()
    palette = palette or Palette()
    ncols = max(1, min(ncols, len(panels)))
    nrows = max(1, int(np.ceil(len(panels) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(PAGE_WIDTH, 2.1 * nrows + 0.5), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax, panel in zip(axes.flat, panels, strict=False):
        sub = table[table["panel"] == panel]
        ax.set_title(panel)
        vision = "vision" in panel if vision_panels is None else panel in vision_panels
        ax.set_xlabel(VISION_LAYER_LABEL if vision else LAYER_LABEL, fontsize=6)
        if sub.empty:
            ax.text(
                0.5, 0.5, "not configured", ha="center", va="center", transform=ax.transAxes, color="grey"
            )
            continue
        draw_layer_panel(ax, sub, palette, ylim=fixed_limits(panel))
    spare = list(axes.flat)[len(panels) :]
    for ax in spare:
        ax.axis("off")
    if spare:
        figure_legend(spare[0], axes.flat[: len(panels)], loc="center")
    else:
        figure_legend(fig, axes, loc="outside lower center", ncol=3)
    fig.suptitle(title)
    save(fig, out_pdf, out_png)
    plt.close(fig)


def write_table(table: pd.DataFrame, out_tsv) -> None:
    with atomic_path(out_tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
