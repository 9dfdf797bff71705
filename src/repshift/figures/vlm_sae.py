"""Figures of the trained-SAE stage: quality by modality, dictionary match, modality sharing and sparse probes,
one table and one panel row per figure (PDF, PNG, TSV with each series' colour)."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from repshift.figures.style import (  # noqa: E402
    Palette,
    layer_color,
    mark_outliers,
    robust_limits,
    save,
    with_colors,
    write_table,
)

#: The figures of this stage, each with the metrics it draws (one panel per metric) and its title.
FIGURE_METRICS = {
    "vlm_sae": (["fvu", "l0", "ce_loss_recovered"], "VLM-trained vs base SAE by position kind"),
    "dictionary_match": (
        ["max_cos_mean", "random_max_cos_mean", "one_to_one_cos_mean", "code_corr_mean"],
        "Dictionary match: trained vs base SAE",
    ),
    "modality_sharing": (
        ["frac_image-only", "frac_text-only", "frac_shared", "coactivation_shared"],
        "Modality sharing of the trained SAE's latents",
    ),
}
#: Panel titles of the metrics drawn (the TSV keeps the metric names).
METRIC_LABELS = {
    "fvu": "FVU (lower is better)",
    "loss": "loss",
    "dead_frac": "dead fraction",
    "l0": "L0 (active latents per token)",
    "ce_loss_recovered": "CE loss recovered",
    "max_cos_mean": "mean max decoder cosine",
    "random_max_cos_mean": "same, random dictionary",
    "one_to_one_cos_mean": "one-to-one matched cosine",
    "code_corr_mean": "code correlation (text tokens)",
    "frac_image-only": "fraction image-only",
    "frac_text-only": "fraction text-only",
    "frac_shared": "fraction shared",
    "coactivation_shared": "co-activation on pairs",
}


def quality_table(evals: pd.DataFrame) -> pd.DataFrame:
    """FVU, L0 and CE loss recovered per (model, layer, sae, position kind)."""
    keep = evals["metric"].isin(["fvu", "l0", "dead_frac", "ce_loss_recovered"])
    out = evals[keep].reset_index(drop=True)
    return out.assign(series=out["model"] + " " + out["sae"] + ": " + out["position_kind"])


#: Training-curve columns drawn under the quality bars (x: tokens seen).
CURVE_METRICS = ("loss", "fvu", "l0", "dead_frac")


def curve_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Training curves in long form (model, layer, tokens, metric, value), one series per (model, layer) in the
    layer's sequential colour."""
    keep = [m for m in CURVE_METRICS if m in curves]
    long = curves.melt(id_vars=["model", "layer", "tokens"], value_vars=keep, var_name="metric")
    n_layers = int(long["layer"].max()) + 1 if len(long) else 1
    long = long.assign(series=long["model"] + " layer " + long["layer"].astype(str), panel="training curve")
    return long.assign(color=[layer_color(int(layer), n_layers) for layer in long["layer"]])


def plot_curves(axes, table: pd.DataFrame) -> None:
    """One axis per training-curve metric: value against tokens seen, one line per (model, layer)."""
    for ax, metric in zip(axes, CURVE_METRICS, strict=True):
        t = table[table["metric"] == metric]
        for series, g in t.groupby("series", sort=False):
            ax.plot(g["tokens"], g["value"], color=g["color"].iloc[0], lw=1.2, label=series)
        ax.set_title(f"training: {METRIC_LABELS.get(metric, metric)}", fontsize=9)
        ax.set_xlabel("tokens seen")
        if metric == "loss":
            ax.set_yscale("log")
    if len(table):
        axes[0].legend(fontsize=7)


def compare_table(compare: pd.DataFrame) -> pd.DataFrame:
    return compare.assign(series=compare["model"] + " trained vs base")


def sharing_table(sharing: pd.DataFrame) -> pd.DataFrame:
    out = sharing[sharing["metric"].str.startswith(("frac_", "coactivation"))].reset_index(drop=True)
    return out.assign(series=out["model"] + " trained SAE")


def sparse_table(sparse: pd.DataFrame) -> pd.DataFrame:
    g = sparse.groupby(["model", "layer", "modality", "probe", "k"], as_index=False)["value"].mean()
    g = g.rename(columns={"value": "accuracy"})
    return g.assign(series=g["model"] + " [" + g["modality"] + "]")


#: Colour of each position kind in the quality panels (the same in every figure of this stage); the base
#: model's SAE is drawn hatched beside the trained one.
POSITION_COLORS = {
    "image": "#0072B2",
    "prompt": "#E69F00",
    "caption": "#009E73",
    "text": "#009E73",
    "all": "#7F7F7F",
    "splice-text": "#009E73",
    "splice-image": "#0072B2",
    "splice-all": "#7F7F7F",
}


def _bar_style(series: str, color: str) -> tuple[str, str]:
    """(colour, hatch) of one bar series: quality series ``<model> <sae>: <position kind>`` take the position
    kind's colour, hatched for the base SAE; other series keep their registry colour."""
    if ": " in series:
        head, kind = series.rsplit(": ", 1)
        return POSITION_COLORS.get(kind, color), ("//" if head.endswith(" base") else "")
    return color, ""


def _bars(ax, t: pd.DataFrame, metric: str) -> None:
    """Grouped bars of one metric: layers on x, one bar per series present in this metric."""
    series = list(dict.fromkeys(t["series"]))
    layers = sorted(t["layer"].unique())
    width = 0.8 / max(1, len(series))
    limits = robust_limits(t["value"], refs=(0.0, 1.0)) if metric == "ce_loss_recovered" else None
    if limits:
        ax.set_ylim(*limits)
    for k, s in enumerate(series):
        g = t[t["series"] == s]
        color, hatch = _bar_style(s, g["color"].iloc[0])
        v = g.groupby("layer")["value"].mean().reindex(layers).to_numpy()
        x = np.arange(len(layers)) - 0.4 + width * (k + 0.5)
        ax.bar(x, v, width, color=color, hatch=hatch, edgecolor="white", lw=0.3, label=s)
        if limits:
            mark_outliers(ax, x, v, limits, color)
    ax.set_xticks(range(len(layers)), [str(int(layer)) for layer in layers])
    ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=9)
    ax.set_xlabel("layer (output of block L)", fontsize=8)
    if metric == "ce_loss_recovered":
        for ref in (0.0, 1.0):
            ax.axhline(ref, color="grey", lw=0.6, ls=":")


def plot_bars(table: pd.DataFrame, *, metrics: list[str], title: str, out_pdf, out_png, curves=None) -> None:
    """One panel per metric: bars of ``value`` by layer (:func:`_bars`); with ``curves`` (:func:`curve_table`)
    a second row of training curves."""
    rows = 1 if curves is None else 2
    ncols = max(len(metrics), len(CURVE_METRICS) if curves is not None else 0)
    fig, axes = plt.subplots(rows, ncols, figsize=(3.6 * ncols, 3.2 * rows), squeeze=False)
    for ax in axes[0][len(metrics) :]:
        ax.axis("off")
    for ax, metric in zip(axes[0], metrics, strict=False):
        if table.empty:  # e.g. dictionary match without a base SAE (sae_training.models.<m>.base_sae: null)
            ax.text(0.5, 0.5, "no base SAE configured:\nnothing to compare", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8, color="grey")  # fmt: skip
            ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=9)
            continue
        _bars(ax, table[table["metric"] == metric], metric)
    legend = {}
    for ax in axes[0][: len(metrics)]:
        legend.update({label: h for h, label in zip(*ax.get_legend_handles_labels(), strict=True)})
    if len(legend) > 1:  # in the free slot of the first row, or under the figure when there is none
        where = axes[0][len(metrics)] if ncols > len(metrics) else fig
        where.legend(legend.values(), legend.keys(), fontsize=7, loc="center" if where is not fig else "lower center",
                     frameon=False, title="hatched: the base model's SAE", title_fontsize=7)  # fmt: skip
    if curves is not None:
        plot_curves(axes[1], curves)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, out_pdf, out_png)
    plt.close(fig)


def plot_sparse(table: pd.DataFrame, *, out_pdf, out_png) -> None:
    """Accuracy against k per (layer, modality) in the series' colour; the dense probe as a dashed line."""
    panels = table[["layer", "modality"]].drop_duplicates().values.tolist() or [[None, None]]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), squeeze=False)
    for ax, (layer, modality) in zip(axes[0], panels, strict=True):
        t = table[(table["layer"] == layer) & (table["modality"] == modality)]
        s = t[t["probe"] == "sae-sparse"]
        color = s["color"].iloc[0] if len(s) else "black"
        ax.plot(s["k"], s["accuracy"], marker="o", color=color, label="k-sparse SAE codes")
        for v in t.loc[t["probe"] == "dense", "accuracy"]:
            ax.axhline(v, ls="--", color=color, alpha=0.6, label="dense activations")
        ax.set_xscale("log", base=2)
        ks = sorted(t["k"].unique())
        ax.set_xticks(ks, [str(int(k)) for k in ks])
        ax.minorticks_off()
        ax.set_ylim(0, 1.02)
        ax.set_title(f"layer {layer}, {modality} rows", fontsize=9)
        ax.set_xlabel("k latents")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, out_pdf, out_png)
    plt.close(fig)


def draw_all(tables: Mapping[str, pd.DataFrame], output: Mapping[str, str], palette: Palette) -> None:
    """The four figures from the stage's tables (``curve``, ``eval``, ``compare``, ``sharing``, ``sparse``) into
    ``output[<figure>_<pdf|png|tsv>]``."""
    built = {
        "vlm_sae": quality_table(tables["eval"]),
        "dictionary_match": compare_table(tables["compare"]),
        "modality_sharing": sharing_table(tables["sharing"]),
        "sparse_probes": sparse_table(tables["sparse"]),
    }
    for name, table in built.items():
        table = with_colors(table, palette)
        files = {ext: output[f"{name}_{ext}"] for ext in ("pdf", "png", "tsv")}
        if name == "sparse_probes":
            plot_sparse(table, out_pdf=files["pdf"], out_png=files["png"])
        else:
            metrics, title = FIGURE_METRICS[name]
            curves = curve_table(tables["curve"]) if name == "vlm_sae" else None
            plot_bars(
                table, metrics=metrics, title=title, out_pdf=files["pdf"], out_png=files["png"], curves=curves
            )
            table = (
                table
                if curves is None
                else pd.concat([table.assign(panel="quality"), curves], ignore_index=True)
            )
        write_table(table, files["tsv"])
