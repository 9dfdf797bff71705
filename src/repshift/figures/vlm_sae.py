"""Figures of the trained-SAE stage: one table and one bar/line panel set per figure (PDF, PNG, TSV)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def quality_table(evals: pd.DataFrame) -> pd.DataFrame:
    """FVU, L0 and CE loss recovered per (model, layer, sae, position kind)."""
    keep = evals["metric"].isin(["fvu", "l0", "dead_frac", "ce_loss_recovered"])
    return evals[keep].reset_index(drop=True)


def sharing_table(sharing: pd.DataFrame) -> pd.DataFrame:
    return sharing[sharing["metric"].str.startswith(("frac_", "coactivation"))].reset_index(drop=True)


def sparse_table(sparse: pd.DataFrame) -> pd.DataFrame:
    g = sparse.groupby(["model", "layer", "modality", "probe", "k"], as_index=False)["value"].mean()
    return g.rename(columns={"value": "accuracy"})


def _save(fig, out_pdf, out_png) -> None:
    fig.tight_layout()
    fig.savefig(out_pdf)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


def plot_bars(
    table: pd.DataFrame, *, x: str, hue: str, metrics: list[str], title: str, out_pdf, out_png
) -> None:
    """One panel per metric: bars of ``value`` by ``x`` (layer) and ``hue``."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        t = table[table["metric"] == metric]
        if len(t):
            t.pivot_table(index=x, columns=hue, values="value").plot.bar(ax=ax, rot=0)
        ax.set_title(metric)
        ax.set_xlabel("layer (output of block L)" if x == "layer" else x)
    fig.suptitle(title)
    _save(fig, out_pdf, out_png)


def plot_sparse(table: pd.DataFrame, *, out_pdf, out_png) -> None:
    """Accuracy against k per (layer, modality); the dense probe as a dashed line."""
    panels = table[["layer", "modality"]].drop_duplicates().values.tolist() or [[None, None]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (layer, modality) in zip(axes[0], panels, strict=True):
        t = table[(table["layer"] == layer) & (table["modality"] == modality)]
        s = t[t["probe"] == "sae-sparse"]
        ax.plot(s["k"], s["accuracy"], marker="o", label="k-sparse SAE codes")
        for v in t.loc[t["probe"] == "dense", "accuracy"]:
            ax.axhline(v, ls="--", color="grey", label="dense activations")
        ax.set_xscale("log", base=2)
        ax.set_title(f"layer {layer}, {modality} rows")
        ax.set_xlabel("k latents")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
    _save(fig, out_pdf, out_png)
