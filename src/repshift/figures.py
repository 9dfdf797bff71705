"""Figures: one consistent style, layer axis = block output (0-based), numbers beside each figure as TSV.

Every figure is drawn from a tidy table with columns ``panel, series, layer, value, lo, hi`` which is
written next to it with the same stem, so that what is plotted can be checked against its sources.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from repshift.atomic import atomic_path

log = logging.getLogger(__name__)

LAYER_LABEL = "layer L (output of decoder block L, 0-based)"
VISION_LAYER_LABEL = "layer L (output of vision-tower block L, 0-based)"
TABLE_COLUMNS = ["panel", "series", "layer", "value", "lo", "hi"]
SHIFT_PANELS = {
    "token_cosine": "SAE shift: per-token code cosine",
    "mean_code_cosine": "SAE shift: cosine of mean codes",
    "jaccard": "SAE shift: Jaccard of active latents",
}
TRANSFER_PANELS = {
    "fvu": "SAE transfer: FVU (text-only inputs)",
    "l0": "SAE transfer: L0 (text-only inputs)",
    "cosine": "SAE transfer: cos(x, x_hat) (text-only inputs)",
}
PROBE_PANELS = {
    "within": "Probe accuracy: within model (95% CI)",
    "transfer": "Probe accuracy: cross-model / cross-modal (95% CI)",
}
CONTROL_SERIES = "shuffled-label control"
MAJORITY_SERIES = "majority baseline"


def _read(paths: Iterable[str | Path]) -> pd.DataFrame:
    frames = [pd.read_csv(p, sep="\t") for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def shift_rows(shift: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for metric, panel in SHIFT_PANELS.items():
        sub = shift[shift["metric"] == metric]
        for (comparison, layer), g in sub.groupby(["comparison", "layer"]):
            v = float(g["value"].iloc[0])
            rows.append((panel, comparison, int(layer), v, v, v))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def transfer_rows(transfer: pd.DataFrame) -> pd.DataFrame:
    rows = []
    sub = transfer[transfer["position_kind"] == "text"]
    for metric, panel in TRANSFER_PANELS.items():
        for (sae, model, layer), g in sub[sub["metric"] == metric].groupby(["sae", "model", "layer"]):
            v = float(g["value"].mean())
            rows.append((panel, f"{model} ({sae})", int(layer), v, v, v))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def probe_series_name(r: Mapping) -> str:
    if r["transfer"] == "within":
        return f"{r['train_model']} [{r['train_modality']}]"
    if r["transfer"] == "cross-model":
        return f"{r['train_model']} -> {r['test_model']} [{r['train_modality']}]"
    return f"{r['train_model']} [{r['train_modality']} -> {r['test_modality']}]"


def _interval(v: np.ndarray) -> tuple[float, float, float]:
    from scipy import stats

    mean = float(v.mean())
    if len(v) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return mean, mean - half, mean + half


def probe_rows(probes: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Per series and layer: mean over folds x seeds with a 95% t-interval; control and majority lines."""
    rows = []
    sub = probes[probes["metric"] == metric].copy()
    sub["series"] = [probe_series_name(r) for r in sub.to_dict("records")]
    sub["panel"] = np.where(sub["transfer"] == "within", PROBE_PANELS["within"], PROBE_PANELS["transfer"])
    for (panel, probe, series, layer), g in sub.groupby(["panel", "probe", "series", "layer"]):
        if probe == "logreg" or probe not in ("control", "majority"):
            name = series if probe == "logreg" else f"{series} [{probe}]"
            rows.append((panel, name, int(layer), *_interval(g["value"].to_numpy(dtype=float))))
    for (panel, probe, layer), g in sub[sub["probe"].isin(["control", "majority"])].groupby(
        ["panel", "probe", "layer"]
    ):
        name = CONTROL_SERIES if probe == "control" else MAJORITY_SERIES
        v = float(g["value"].mean())
        rows.append((panel, name, int(layer), v, v, v))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def layer_sweep_table(shift_paths: Sequence, transfer_paths: Sequence, probe_paths: Sequence) -> pd.DataFrame:
    parts = []
    if shift_paths:
        parts.append(shift_rows(_read(shift_paths)))
    if transfer_paths:
        parts.append(transfer_rows(_read(transfer_paths)))
    if probe_paths:
        parts.append(probe_rows(_read(probe_paths)))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=TABLE_COLUMNS)
    return table.sort_values(["panel", "series", "layer"], kind="stable").reset_index(drop=True)


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
    table: pd.DataFrame, panels: Sequence[str], out_pdf, out_png, *, title: str, ncols: int = 3
) -> None:
    plt = _style()
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 4.6 * nrows), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, panel in zip(axes.flat, panels, strict=False):
        sub = table[table["panel"] == panel]
        ax.set_title(panel)
        ax.set_xlabel(LAYER_LABEL if "vision" not in panel else VISION_LAYER_LABEL)
        if sub.empty:
            ax.text(
                0.5, 0.5, "not configured", ha="center", va="center", transform=ax.transAxes, color="grey"
            )
            continue
        refs = {CONTROL_SERIES: ("--", "dimgrey"), MAJORITY_SERIES: (":", "black")}
        main = sorted(x for x in sub["series"].unique() if x not in refs)
        for i, series in enumerate(main + [x for x in refs if x in set(sub["series"])]):
            g = sub[sub["series"] == series].sort_values("layer")
            if series in refs:
                style, color = refs[series]
                ax.plot(g["layer"], g["value"], style, lw=1.2, color=color, label=series)
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
    fig.tight_layout()
    for out in (out_pdf, out_png):
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=Path(out).suffix.lstrip("."))
    plt.close(fig)


def write_table(table: pd.DataFrame, out_tsv) -> None:
    with atomic_path(out_tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def layer_sweep(
    shift_paths, transfer_paths, probe_paths, *, out_pdf, out_png, out_tsv, title=None
) -> pd.DataFrame:
    table = layer_sweep_table(shift_paths, transfer_paths, probe_paths)
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


def probe_tasks_table(probe_paths: Sequence) -> pd.DataFrame:
    """Per task: within-model and transfer accuracy per layer, panel = task."""
    probes = _read(probe_paths)
    parts = []
    for task, sub in probes.groupby("task"):
        rows = probe_rows(sub)
        rows["panel"] = [
            f"{task}: {'1 within-model' if p == PROBE_PANELS['within'] else '2 transfer'} accuracy"
            for p in rows["panel"]
        ]
        parts.append(rows)
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=TABLE_COLUMNS)
    return table.sort_values(["panel", "series", "layer"], kind="stable").reset_index(drop=True)


def probe_tasks(probe_paths, *, out_pdf, out_png, out_tsv) -> pd.DataFrame:
    table = probe_tasks_table(probe_paths)
    order = sorted(table["panel"].unique())  # per task: within-model ("1 ...") before transfer ("2 ...")
    table["panel"] = table["panel"].str.replace(r": [12] ", ": ", regex=True)
    panels = [re.sub(r": [12] ", ": ", p) for p in order]
    plot_panels(
        table,
        panels,
        out_pdf,
        out_png,
        ncols=min(3, max(1, len(panels))),
        title="repshift probes by task (accuracy per layer; dashed: shuffled-label control, dotted: majority)",
    )
    write_table(table, out_tsv)
    return table
