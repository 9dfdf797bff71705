"""Probe figures: per task, attributes, cross-modal layer matrix, learning curves."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from repshift.figures.layer_sweep import (
    CONTROL_SERIES,
    MAJORITY_SERIES,
    NULL_SERIES,
    PROBE_PANELS,
    probe_rows,
    probe_series_name,
)
from repshift.figures.style import (
    CONTROL_STYLE,
    LAYER_LABEL,
    MAJORITY_STYLE,
    PAGE_WIDTH,
    TABLE_COLUMNS,
    Palette,
    _interval,
    _read,
    _style,
    layer_color,
    plot_panels,
    save,
    with_colors,
    write_table,
)
from repshift.formats.atomic import atomic_path

log = logging.getLogger(__name__)


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


def task_panel_order(
    panels: Collection[str], vision_tasks: Collection[str], tasks: Sequence[str] = ()
) -> list[str]:
    """Decoder tasks before vision-tower tasks, then config order (``tasks``; else by name), and per task
    within-model ("1 ...") before transfer ("2 ...")."""

    def key(panel: str):
        task = panel.split(": ", 1)[0]
        rank = list(tasks).index(task) if task in tasks else len(tasks)
        return (task in set(vision_tasks), rank, task, panel)

    return sorted(panels, key=key)


def probe_tasks(
    probe_paths,
    *,
    out_pdf,
    out_png,
    out_tsv,
    vision_tasks: Collection[str] = (),
    tasks: Sequence[str] = (),
    palette: Palette | None = None,
) -> pd.DataFrame:
    palette = palette or Palette()
    table = with_colors(probe_tasks_table(probe_paths), palette)
    order = task_panel_order(table["panel"].unique(), vision_tasks, tasks)
    table["panel"] = table["panel"].str.replace(r": [12] ", ": ", regex=True)
    panels = [re.sub(r": [12] ", ": ", p) for p in order]
    plot_panels(
        table,
        panels,
        out_pdf,
        out_png,
        ncols=2,
        title="Probes by task: accuracy per layer (95% CI; dashed + band: permutation null; dotted: majority)",
        vision_panels={p for p in panels if p.split(": ", 1)[0] in set(vision_tasks)},
        palette=palette,
    )
    write_table(table, out_tsv)
    return table


# ------------------------------------------------------------------------------------------ attribute probes
def attribute_probes_table(probe_paths: Sequence) -> pd.DataFrame:
    """Per attribute task (panel = task): within-model and cross-model accuracy per layer with intervals, and the
    within-model control and majority lines."""
    probes = _read(probe_paths)
    parts = []
    for task, sub in probes.groupby("task"):
        rows = probe_rows(sub)
        within = rows["panel"] == PROBE_PANELS["within"]
        refs = rows["series"].isin([CONTROL_SERIES, NULL_SERIES, MAJORITY_SERIES])
        rows = rows[within | ~refs].assign(panel=f"{task}: accuracy")
        parts.append(rows)
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=TABLE_COLUMNS)
    return table.sort_values(["panel", "series", "layer"], kind="stable").reset_index(drop=True)


def attribute_probes(
    probe_paths,
    *,
    out_pdf,
    out_png,
    out_tsv,
    vision_tasks: Collection[str] = (),
    palette: Palette | None = None,
) -> pd.DataFrame:
    """Image-attribute probes (brightness, redness, ...): decoder streams first, then vision towers."""
    palette = palette or Palette()
    table = with_colors(attribute_probes_table(probe_paths), palette)
    vision = {f"{t}: accuracy" for t in vision_tasks}
    panels = sorted(table["panel"].unique(), key=lambda p: (p in vision, p))
    plot_panels(
        table,
        panels,
        out_pdf,
        out_png,
        ncols=min(3, max(1, len(panels))),
        title="Image-attribute probes: accuracy per layer (95% CI; dashed + band: permutation null; dotted: majority)",
        vision_panels=vision,
        palette=palette,
    )
    write_table(table, out_tsv)
    return table


# -------------------------------------------------------------------------------------- cross-modal matrix
MATRIX_COLUMNS = ["panel", "train_layer", "test_layer", "value", "lo", "hi", "n", "majority", "color"]


def cross_modal_matrix_table(paths: Sequence) -> pd.DataFrame:
    """Per task, model and direction (panel): mean accuracy over seeds x folds of the probe trained at
    ``train_layer`` on one modality and scored on the other modality's held-out rows at ``test_layer``, with the
    95% corrected repeated-CV interval and the majority-class baseline of that direction."""
    scores = _read(paths)
    if scores.empty:
        return pd.DataFrame(columns=MATRIX_COLUMNS)
    scores = scores[scores["metric"] == "accuracy"]
    scores["panel"] = [
        f"{r['task']}: {r['model']}, {r['train_modality']} -> {r['test_modality']}"
        for r in scores[["task", "model", "train_modality", "test_modality"]].to_dict("records")
    ]
    majority = scores[scores["probe"] == "majority"].groupby("panel")["value"].mean()
    rows = []
    for (panel, i, j), g in scores[scores["probe"] == "logreg"].groupby(
        ["panel", "train_layer", "test_layer"]
    ):
        rows.append((panel, int(i), int(j), *_interval(g), len(g), float(majority.get(panel, math.nan))))
    table = pd.DataFrame(rows, columns=MATRIX_COLUMNS[:-1])
    return table.sort_values(["panel", "train_layer", "test_layer"], kind="stable").reset_index(drop=True)


def cross_modal_matrix(paths, *, out_pdf, out_png, out_tsv, palette: Palette | None = None) -> pd.DataFrame:
    """Heatmaps (rows: train layer, columns: test layer) of cross-modal probe transfer, one per panel; the TSV's
    ``color`` is the model's colour (the panel titles carry it)."""
    table = with_colors(cross_modal_matrix_table(paths), palette or Palette(), column="panel")
    panels = list(dict.fromkeys(table["panel"]))
    plt = _style()
    ncols = min(2, max(1, len(panels)))
    nrows = max(1, int(np.ceil(len(panels) / ncols)))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.8 * ncols + 1.2, 4.6 * nrows + 0.6), squeeze=False, layout="constrained"
    )
    image = None
    for ax, panel in zip(axes.flat, panels, strict=False):
        sub = table[table["panel"] == panel]
        train = sorted(sub["train_layer"].unique())
        test = sorted(sub["test_layer"].unique())
        grid = (
            sub.pivot(index="train_layer", columns="test_layer", values="value").loc[train, test].to_numpy()
        )
        image = ax.imshow(grid, origin="lower", cmap="viridis", vmin=0, vmax=1, aspect="equal")
        ax.grid(False)
        ax.set_xticks(range(len(test)), [str(x) for x in test])
        ax.set_yticks(range(len(train)), [str(x) for x in train])
        ax.set_xlabel("test layer L (output of decoder block L, 0-based)")
        ax.set_ylabel("train layer L (output of decoder block L, 0-based)")
        chance = float(sub["majority"].iloc[0])
        ax.set_title(f"{panel}\n(majority baseline {chance:.2f}; diagonal outlined)", fontsize=9,
                     color=sub["color"].iloc[0])  # fmt: skip
        for k in range(min(len(train), len(test))):
            ax.add_patch(plt.Rectangle((k - 0.5, k - 0.5), 1, 1, fill=False, ec="white", lw=1.2))
        if len(train) * len(test) <= 196:
            for a, b in np.ndindex(grid.shape):
                ax.text(
                    b,
                    a,
                    f"{grid[a, b]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color="black" if grid[a, b] > 0.6 else "white",
                )
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if not panels:
        axes.flat[0].text(
            0.5, 0.5, "no cross-modal probes configured", ha="center", va="center", color="grey"
        )
    fig.suptitle(
        "Cross-modal probe transfer, layer x layer\n(mean accuracy over seeds x held-out folds)", fontsize=11
    )
    if image is not None:
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
        bar.set_label("accuracy on the other modality's held-out rows")
    for out in (out_pdf, out_png):
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=Path(out).suffix.lstrip("."), bbox_inches="tight")
    plt.close(fig)
    write_table(table, out_tsv)
    return table


# ----------------------------------------------------------------------------------------- learning curves
CURVE_COLUMNS = ["panel", "series", "layer", "train_fraction", "n_train", "value", "lo", "hi", "color"]


def learning_curve_table(probe_paths: Sequence, metric: str = "accuracy") -> pd.DataFrame:
    """Within-model logistic probes at the layers that have a learning curve: per panel (task, model [modality])
    and layer, mean over seeds x folds per training fraction with the 95% corrected repeated-CV interval; the
    control and majority means (full training folds, over the same layers) as reference series."""
    probes = _read(probe_paths)
    if probes.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    sub = probes[(probes["metric"] == metric) & (probes["transfer"] == "within")].copy()
    curve_layers = sub[(sub["probe"] == "logreg") & (sub["train_fraction"] < 1)][["task", "layer"]]
    sub = sub.merge(curve_layers.drop_duplicates(), on=["task", "layer"])
    sub["panel"] = [f"{r['task']}: {probe_series_name(r)}" for r in sub.to_dict("records")]
    rows = []
    for (panel, layer, fraction), g in sub[sub["probe"] == "logreg"].groupby(
        ["panel", "layer", "train_fraction"]
    ):
        rows.append(
            (
                panel,
                f"layer {int(layer)}",
                int(layer),
                float(fraction),
                float(g["n_train"].mean()),
                *_interval(g),
            )
        )
    refs = {"control": CONTROL_SERIES, "permutation": NULL_SERIES, "majority": MAJORITY_SERIES}
    for (panel, probe), g in sub[sub["probe"].isin(list(refs))].groupby(["panel", "probe"]):
        v = float(g["value"].mean())
        name = refs[probe]
        rows.append((panel, name, -1, 1.0, float(g["n_train"].mean()), v, v, v))
    table = pd.DataFrame(rows, columns=CURVE_COLUMNS[:-1])
    n_layers = int(probes["layer"].max()) + 1
    refs = {CONTROL_SERIES: CONTROL_STYLE.color, MAJORITY_SERIES: MAJORITY_STYLE.color}
    table["color"] = [
        refs.get(s) or layer_color(int(ly), n_layers)
        for s, ly in zip(table["series"], table["layer"], strict=True)
    ]
    return table.sort_values(["panel", "layer", "train_fraction"], kind="stable").reset_index(drop=True)


def learning_curves(probe_paths, *, out_pdf, out_png, out_tsv) -> pd.DataFrame:
    """Accuracy against the fraction of training folds used, one line per layer, one panel per probe."""
    table = learning_curve_table(probe_paths)
    panels = list(dict.fromkeys(table["panel"]))
    plt = _style()
    ncols = min(3, max(1, len(panels)))
    nrows = max(1, int(np.ceil(len(panels) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(PAGE_WIDTH, 2.3 * nrows + 0.4), squeeze=False)
    color = dict(zip(table["layer"], table["color"], strict=True))
    for ax, panel in zip(axes.flat, panels, strict=False):
        sub = table[table["panel"] == panel]
        for layer, g in sub[sub["layer"] >= 0].groupby("layer"):
            g = g.sort_values("train_fraction")
            ax.plot(
                g["train_fraction"],
                g["value"],
                "-o",
                ms=3,
                lw=1.5,
                color=color[layer],
                label=f"layer {layer}",
            )
            if (g["hi"] > g["lo"]).any():
                ax.fill_between(g["train_fraction"], g["lo"], g["hi"], color=color[layer], alpha=0.15, lw=0)
        for name, style in ((CONTROL_SERIES, "--"), (MAJORITY_SERIES, ":")):
            ref = sub[sub["series"] == name]
            if len(ref):
                ax.axhline(
                    float(ref["value"].iloc[0]),
                    ls=style,
                    lw=1.2,
                    color="dimgrey" if "control" in name else "black",
                    label=name,
                )
        fractions = sorted(sub["train_fraction"].unique())
        ax.set_xscale("log")
        ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
        ax.minorticks_off()
        ax.set_ylim(0, 1.02)
        ax.set_title(panel)
        ax.set_xlabel("fraction of the training folds used (log scale)")
        ax.set_ylabel("accuracy (held-out fold)")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = [], []
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if not panels:
        axes.flat[0].text(0.5, 0.5, "no learning curves configured", ha="center", va="center", color="grey")
    fig.suptitle(
        f"Learning curves of the within-model probes (mean over seeds x folds, 95% CI; {LAYER_LABEL})"
    )
    fig.tight_layout()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5))
    save(fig, out_pdf, out_png)
    plt.close(fig)
    write_table(table, out_tsv)
    return table
