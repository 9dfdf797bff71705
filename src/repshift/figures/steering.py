"""The steering figure: dose-response of efficacy per direction kind with bands (random directions as one band),
efficacy against damage, per (model, pair, layer); and the tidy TSV of every plotted point."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from repshift.figures.style import _style, write_table

KIND_COLORS = {"probe": "#1f77b4", "mean-diff": "#d62728", "sae": "#2ca02c", "random": "#7f7f7f"}
TABLE_COLUMNS = ["panel", "series", "alpha", "measure", "value", "lo", "hi"]


def steering_table(paths: Sequence[str]) -> pd.DataFrame:
    """Plotted points: at the write layer itself, efficacy and damage per direction kind and alpha (random
    directions averaged, their band = min/max of the per-direction intervals); one-block-off controls as series
    ``<kind>@L-1`` / ``<kind>@L+1``."""
    df = pd.concat([pd.read_csv(p, sep="\t") for p in paths], ignore_index=True)
    df = df[df["measure"].isin(["efficacy", "damage"])]
    rows = []
    for (model, pair, layer), sub in df.groupby(["model", "pair", "layer"], sort=True):
        panel = f"{model} {pair} L{layer}"
        for (kind, wl, alpha, measure), g in sub.groupby(["kind", "write_layer", "alpha", "measure"]):
            off = int(wl) - int(layer)
            series = kind if off == 0 else f"{kind}@L{off:+d}"
            rows.append(
                {
                    "panel": panel,
                    "series": series,
                    "alpha": alpha,
                    "measure": measure,
                    "value": g["value"].mean(),
                    "lo": g["ci_low"].min(),
                    "hi": g["ci_high"].max(),
                }
            )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def plot_steering(paths: Sequence[str], *, out_pdf, out_png, out_tsv) -> pd.DataFrame:
    plt = _style()
    table = steering_table(paths)
    panels = sorted(table["panel"].unique())
    fig, axes = plt.subplots(len(panels), 2, figsize=(9, 2.8 * max(1, len(panels))), squeeze=False)
    for i, panel in enumerate(panels):
        sub = table[table["panel"] == panel]
        ax_d, ax_e = axes[i]
        for series, g in sub.groupby("series"):
            kind = series.split("@")[0]
            color = KIND_COLORS.get(kind, "k")
            style = "-" if "@" not in series else (":" if "-1" in series else "--")
            eff = g[g["measure"] == "efficacy"].sort_values("alpha")
            dmg = g[g["measure"] == "damage"].sort_values("alpha")
            ax_d.plot(eff["alpha"], eff["value"], style, color=color, marker="o", ms=3, label=series)
            if "@" not in series:
                ax_d.fill_between(
                    eff["alpha"],
                    eff["lo"],
                    eff["hi"],
                    color=color,
                    alpha=0.15 if kind != "random" else 0.3,
                    lw=0,
                )
            if len(eff) == len(dmg):
                ax_e.plot(
                    dmg["value"].to_numpy(),
                    eff["value"].to_numpy(),
                    style,
                    color=color,
                    marker="o",
                    ms=3,
                    label=series,
                )
        ax_d.axhline(0, color="k", lw=0.5)
        ax_d.set(
            title=f"{panel}: dose-response",
            xlabel="alpha (x mean residual norm at L)",
            ylabel="efficacy: Δ log-odds target vs source",
        )
        ax_e.set(
            title=f"{panel}: efficacy vs damage",
            xlabel="damage: Δ caption NLL (nats/token)",
            ylabel="efficacy: Δ log-odds",
        )
        ax_d.legend(ncol=2)
    fig.suptitle(
        "repshift steering at the output of block L\n(dotted/dashed: the same direction written one block "
        "early/late; grey band: random directions of the same norm)",
        fontsize=9,
    )
    fig.tight_layout()
    from repshift.formats.atomic import atomic_path

    for out in (out_pdf, out_png):
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=str(out).rsplit(".", 1)[-1])
    plt.close(fig)
    write_table(table, out_tsv)
    return table
