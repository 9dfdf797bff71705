"""SAE figures: latent density histograms and the latents gained/lost between two models.

Each figure is written with the tidy table it is drawn from (same stem, ``.tsv``):

- ``latent_density``: per (sae, model, dataset, layer, position kind) a histogram of log10 firing frequency of
  the SAE's latents over content tokens (text tokens of text rows; image tokens of image rows), dead latents
  (never firing) counted apart in a ``dead`` row; BOS, pads and specials never count.
- ``latents_shift``: from compare_sae's ``.latents.tsv`` tables, every listed latent with its Δfreq and Δmean
  and Neuronpedia link, ranked per (comparison, layer, direction); the figure plots the size of the biggest
  gains and losses per layer and prints the top latents of a few layers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from repshift.figures.style import LAYER_LABEL, PAGE_WIDTH, Palette, _style, layer_color, save, write_table
from repshift.formats import layout

log = logging.getLogger(__name__)

#: log10 firing-frequency bin edges (frequencies below 1e-7 fall into the first bin).
DENSITY_EDGES = np.round(np.arange(-7.0, 0.0001, 0.25), 2)
DENSITY_COLUMNS = [
    "sae", "model", "dataset", "layer", "position_kind", "bin", "bin_lo", "bin_hi", "count", "n_latents",
    "n_tokens",
]  # fmt: skip
DENSITY_KINDS = ("text", "image")
SHIFT_COLUMNS = [
    "comparison", "sae", "dataset", "base", "adapted", "layer", "direction", "rank", "latent", "freq_a", "freq_b",
    "delta_freq", "mean_a", "mean_b", "delta_mean", "neuronpedia_url",
]  # fmt: skip


def density_histogram(freq_F: np.ndarray, edges: np.ndarray = DENSITY_EDGES) -> tuple[int, np.ndarray]:
    """(number of dead latents, counts of the live ones per log10-frequency bin [lo, hi); 1.0 in the last)."""
    freq_F = np.asarray(freq_F, dtype=np.float64)
    live = freq_F[freq_F > 0]
    logf = np.clip(np.log10(live), edges[0], edges[-1])
    counts, _ = np.histogram(logf, bins=edges)
    return int((freq_F == 0).sum()), counts.astype(np.int64)


def content_rows(index: dict) -> dict[str, np.ndarray]:
    """Token rows per content kind: text tokens of text rows, image tokens of image rows."""
    from repshift.formats.activations_h5 import POSITION_KINDS

    example_T = np.repeat(np.arange(len(index["modality"])), np.diff(index["offsets"]))
    modality_T = np.asarray(index["modality"])[example_T]
    kinds_T = index["kinds_T"]
    return {
        "text": np.flatnonzero((kinds_T == POSITION_KINDS["text"]) & (modality_T == "text")),
        "image": np.flatnonzero((kinds_T == POSITION_KINDS["image"]) & (modality_T == "image")),
    }


def latent_density_table(code_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """Histogram rows for every ``layer-L.codes.h5`` in ``code_dirs`` (folder = .../{sae}/{model}/{dataset},
    or an activation folder of the fused path: names are taken from the files' transfer tables)."""
    from repshift.formats import codes_h5
    from repshift.sae.codes import latent_density

    rows = []
    for d in code_dirs:
        d = Path(d)
        for path in layout.layer_files(d, layout.CODES).values():
            codes, meta = codes_h5.read_codes(path, load_pooled=False)
            layer = int(meta["attrs"]["layer"])
            model = str(meta["attrs"].get("model", d.parent.name))
            sae, dataset = _names(d, layer)
            for kind, sel in content_rows(codes_h5.read_token_index(path)).items():
                if not len(sel):
                    continue
                dead, counts = density_histogram(latent_density(codes.take(sel)))
                common = dict(sae=sae, model=model, dataset=dataset, layer=layer, position_kind=kind,
                              n_latents=codes.d_sae, n_tokens=len(sel))  # fmt: skip
                rows.append({**common, "bin": "dead", "bin_lo": np.nan, "bin_hi": np.nan, "count": dead})
                for lo, hi, c in zip(DENSITY_EDGES[:-1], DENSITY_EDGES[1:], counts, strict=True):
                    rows.append(
                        {**common, "bin": f"[{lo:g},{hi:g})", "bin_lo": lo, "bin_hi": hi, "count": int(c)}
                    )
    return pd.DataFrame(rows, columns=DENSITY_COLUMNS)


def _names(code_dir: Path, layer: int) -> tuple[str, str]:
    """(sae, dataset) of a codes folder, from its transfer table (both layouts write one)."""
    t = layout.transfer_file(code_dir, layer)
    if t.exists():
        row = pd.read_csv(t, sep="\t", nrows=1)
        if len(row):
            return str(row["sae"].iloc[0]), str(row["dataset"].iloc[0])
    return code_dir.parent.parent.name, code_dir.name


def _pick_layers(layers: Sequence[int], k: int = 6) -> list[int]:
    layers = sorted(set(int(x) for x in layers))
    if len(layers) <= k:
        return layers
    return sorted({layers[int(round(i))] for i in np.linspace(0, len(layers) - 1, k)})


def _save(fig, out_pdf, out_png) -> None:
    save(fig, out_pdf, out_png)


def plot_latent_density(
    code_dirs, *, out_pdf, out_png, out_tsv, kind: str = "text", palette: Palette | None = None
) -> pd.DataFrame:
    """Figure: one panel per (sae, model, dataset) for ``kind`` tokens on shared axes, one line per layer (a
    subset of at most six layers when there are more; the TSV has them all; colour: the layer, as in every
    per-layer figure), dead latents in the legend; panel titles in the model's colour."""
    palette = palette or Palette()
    table = latent_density_table(code_dirs)
    n_layers = int(table["layer"].max()) + 1 if len(table) else 1
    table["color"] = [layer_color(int(x), n_layers) for x in table["layer"]]
    plt = _style()
    sub = table[table["position_kind"] == kind]
    keys = sorted(sub.groupby(["sae", "model", "dataset"]).groups) if len(sub) else []
    order = {m: i for i, m in enumerate(palette.models)}
    keys = sorted(keys, key=lambda k: (order.get(k[1], 99), k))
    ncols = min(3, max(1, len(keys)))
    nrows = max(1, int(np.ceil(len(keys) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(PAGE_WIDTH, 2.0 * nrows + 0.4), squeeze=False,
                             sharex=True, sharey=True)  # fmt: skip
    for ax, key in zip(axes.flat, keys, strict=False):
        g = sub[(sub["sae"] == key[0]) & (sub["model"] == key[1]) & (sub["dataset"] == key[2])]
        layers = _pick_layers(g["layer"].unique())
        for layer in layers:
            h = g[g["layer"] == layer]
            live = h[h["bin"] != "dead"]
            dead = int(h.loc[h["bin"] == "dead", "count"].sum())
            n_lat = int(h["n_latents"].iloc[0])
            x = np.append(live["bin_lo"].to_numpy(), live["bin_hi"].iloc[-1])
            y = np.append(live["count"].to_numpy(), live["count"].iloc[-1]) / n_lat
            ax.step(x, y, where="post", color=h["color"].iloc[0], lw=1.2,
                    label=f"layer {layer} (dead {dead}/{n_lat})")  # fmt: skip
        n_tok = int(g["n_tokens"].max())
        ax.axvline(np.log10(1.0 / max(n_tok, 1)), color="grey", ls=":", lw=1)
        ax.set_xlim(max(DENSITY_EDGES[0], np.floor(np.log10(1.0 / max(n_tok, 1))) - 0.5), 0)
        ax.set_title(f"{key[1]} on {key[2]}\n({key[0]}, n={n_tok} tokens)", color=palette.model_color(key[1]))
        ax.legend(fontsize=5.5, handlelength=1.2)
    for ax in axes[-1]:
        ax.set_xlabel(f"log10 firing frequency ({kind} tokens)")
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of latents")
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    if not keys:
        axes.flat[0].text(0.5, 0.5, "no SAE codes configured", ha="center", va="center", color="grey")
    fig.suptitle("SAE latent density per layer (dead latents counted apart; dotted: one token)")
    fig.tight_layout()
    _save(fig, out_pdf, out_png)
    plt.close(fig)
    write_table(table, out_tsv)
    return table


def latents_shift_table(latent_paths: Sequence[str | Path]) -> pd.DataFrame:
    """Every latent of compare_sae's gained/lost tables with Δfreq = freq_b − freq_a and Δmean, ranked within
    (comparison, layer, direction) (rank 1 = the largest change)."""
    frames = [pd.read_csv(p, sep="\t", keep_default_na=False, na_values=[""]) for p in latent_paths]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=SHIFT_COLUMNS)
    t = pd.concat(frames, ignore_index=True)
    t["delta_freq"] = t["freq_b"] - t["freq_a"]
    t["delta_mean"] = t["mean_b"] - t["mean_a"]
    t["neuronpedia_url"] = t["neuronpedia_url"].fillna("")
    size = np.where(t["direction"].str.startswith("freq"), t["delta_freq"].abs(), t["delta_mean"].abs())
    t = t.assign(_size=size).sort_values(
        ["comparison", "layer", "direction", "_size", "latent"], ascending=[True, True, True, False, True]
    )
    t["rank"] = t.groupby(["comparison", "layer", "direction"]).cumcount() + 1
    return t[SHIFT_COLUMNS].reset_index(drop=True)


def latents_shift_summary(table: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """Per (comparison, layer): the largest firing-frequency gain and loss and the mean of the top ``top``."""
    rows = []
    for (comparison, layer), g in table.groupby(["comparison", "layer"]):
        for direction in ("freq_gained", "freq_lost"):
            d = g[g["direction"] == direction].sort_values("rank")["delta_freq"].to_numpy()
            rows.append({
                "comparison": comparison, "layer": int(layer), "direction": direction,
                "top1": float(d[0]) if len(d) else 0.0, f"top{top}_mean": float(d[:top].mean()) if len(d) else 0.0,
                "n_listed": int(len(d)),
            })  # fmt: skip
    return pd.DataFrame(rows)


def _first_comparison(latent_paths) -> str | None:
    """The comparison of the first non-empty table (config order: the main comparison comes first)."""
    for p in latent_paths:
        head = pd.read_csv(p, sep="\t", nrows=1)
        if len(head):
            return str(head["comparison"].iloc[0])
    return None


def plot_latents_shift(
    latent_paths, *, out_pdf, out_png, out_tsv, n_show: int = 3, palette: Palette | None = None
) -> pd.DataFrame:
    """Figure: (left) per layer, the biggest firing-frequency gains (>0) and losses (<0) per comparison,
    top-1 solid and top-10 mean dashed; (right) the top ``n_show`` gained and lost latents of up to four layers
    of the first comparison. The TSV lists every latent (with its Neuronpedia link)."""
    palette = palette or Palette()
    table = latents_shift_table(latent_paths)
    table["color"] = [palette.color(c) for c in table["comparison"]]
    summary = latents_shift_summary(table)
    plt = _style()
    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 3.2), gridspec_kw={"width_ratios": [1, 1.3]})
    for comparison in list(dict.fromkeys(table["comparison"])):
        s = summary[summary["comparison"] == comparison]
        style = palette.style(comparison)
        for direction in ("freq_gained", "freq_lost"):
            g = s[s["direction"] == direction].sort_values("layer")
            ax.plot(g["layer"], g["top1"], ls=style.ls, marker="o", ms=3, color=style.color,
                    label=comparison if direction == "freq_gained" else None)  # fmt: skip
            ax.plot(g["layer"], g["top10_mean"], ls=style.ls, marker="x", ms=3, lw=0.6, color=style.color,
                    alpha=0.6)  # fmt: skip
    ax.axhline(0, color="black", lw=0.8)
    if len(summary):
        ax.set_xticks(sorted(summary["layer"].unique()))
    ax.xaxis.set_major_formatter("{x:.0f}")
    ax.plot([], [], "o", color="grey", label="top-1 latent")
    ax.plot([], [], "x", color="grey", lw=0.6, label="mean of top 10")
    ax.set_xlabel(LAYER_LABEL)
    ax.set_ylabel("Δ firing frequency (adapted − base)\n>0 gained, <0 lost")
    ax.set_title("Latents gained and lost per layer")
    ax.legend(fontsize=5.5)
    ax_t.axis("off")
    if len(table):
        first = _first_comparison(latent_paths) or sorted(table["comparison"].unique())[0]
        t = table[(table["comparison"] == first) & table["direction"].isin(["freq_gained", "freq_lost"])]
        cells = []
        for layer in _pick_layers(t["layer"].unique(), 4):
            for direction in ("freq_gained", "freq_lost"):
                for _, r in t[
                    (t["layer"] == layer) & (t["direction"] == direction) & (t["rank"] <= n_show)
                ].iterrows():
                    cells.append([str(int(layer)), direction.replace("freq_", ""), str(int(r["latent"])),
                                  f"{r['freq_a']:.3f}", f"{r['freq_b']:.3f}", f"{r['delta_freq']:+.3f}",
                                  f"{r['delta_mean']:+.3f}"])  # fmt: skip
        if cells:
            tab = ax_t.table(cellText=cells, colLabels=["layer", "change", "latent", "freq base", "freq adapted",
                                                         "Δfreq", "Δmean"], loc="center", cellLoc="right")  # fmt: skip
            tab.auto_set_font_size(False)
            tab.set_fontsize(6)
            tab.auto_set_column_width(list(range(7)))  # "freq adapted" fits its cell
            tab.scale(1, 0.9)
        ax_t.set_title(f"{first}: top {n_show} gained / lost latents\n(all, with links: {Path(out_tsv).name})",
                       color=palette.color(first), pad=14)  # fmt: skip
    fig.suptitle("SAE latents gained and lost: base LLM → adapted decoder (text tokens)")
    fig.tight_layout()
    _save(fig, out_pdf, out_png)
    plt.close(fig)
    write_table(table, out_tsv)
    return table
