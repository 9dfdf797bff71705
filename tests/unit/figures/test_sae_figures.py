"""Latent density histograms and the latents gained/lost table and figures, on hand-made codes."""

import numpy as np
import pandas as pd
import pytest

from repshift.figures import sae as figures_sae
from repshift.formats import codes_h5
from repshift.formats.activations_h5 import POSITION_KINDS
from repshift.sae.codes import SparseCodes

BOS, TEXT, IMAGE = POSITION_KINDS["bos"], POSITION_KINDS["text"], POSITION_KINDS["image"]


def test_density_histogram_counts_dead_apart():
    freq = np.array([0.0, 0.0, 1.0, 0.8, 1e-3, 2e-9])
    dead, counts = figures_sae.density_histogram(freq)
    assert dead == 2 and counts.sum() == 4
    edges = figures_sae.DENSITY_EDGES
    assert counts[-1] == 2  # 0.8 and 1.0 (the last bin is closed)
    assert counts[np.searchsorted(edges, -3.0, side="right") - 1] == 1
    assert counts[0] == 1  # below 1e-7: first bin


def _codes_dir(tmp_path):
    """Two examples: a text row (BOS + 3 text tokens) and an image row (2 image tokens + BOS + 1 prompt token)."""
    d = tmp_path / "sae/demo/llm/cats"
    d.mkdir(parents=True)
    dense = np.zeros((9, 4), np.float32)
    dense[0, 3] = 5.0  # BOS: latent 3 fires only there -> dead on content tokens
    dense[1:4, 0] = 1.0  # latent 0 on every text token
    dense[1, 1] = 2.0  # latent 1 on one text token of three
    dense[4:6, 2] = 1.0  # latent 2 on the image tokens
    codes = SparseCodes.from_dense(dense[:8])
    kinds = np.array([BOS, TEXT, TEXT, TEXT, IMAGE, IMAGE, BOS, TEXT])
    path = d / "layer-2.codes.h5"
    codes_h5.write_codes(
        path, codes, example_offsets_N1=np.array([0, 4, 8]), attrs={"layer": 2, "model": "llm"}
    )
    codes_h5.write_token_index(
        path, example_id=["t0", "i0"], modality=["text", "image"], kinds_T=kinds, ids_T=np.arange(8)
    )
    pd.DataFrame(
        [
            {
                "sae": "demo",
                "model": "llm",
                "dataset": "cats",
                "layer": 2,
                "position_kind": "text",
                "metric": "l0",
                "value": 1.0,
            }
        ]
    ).to_csv(d / "layer-2.transfer.tsv", sep="\t", index=False)
    return d


def test_latent_density_table_uses_content_tokens_only(tmp_path):
    table = figures_sae.latent_density_table([_codes_dir(tmp_path)])
    text = table[table.position_kind == "text"]
    assert set(text[["sae", "model", "dataset", "layer"]].itertuples(index=False, name=None)) == {
        ("demo", "llm", "cats", 2)
    }
    assert (
        int(text.loc[text.bin == "dead", "count"].iloc[0]) == 2
    )  # latents 2 and 3 never fire on text tokens
    assert text["n_tokens"].iloc[0] == 3 and text["count"].sum() == 4
    live = text[text.bin != "dead"]
    assert int(live.loc[live.bin_hi == 0.0, "count"].iloc[0]) == 1  # latent 0: frequency 1
    image = table[table.position_kind == "image"]
    assert image["n_tokens"].iloc[0] == 2
    assert int(image.loc[image.bin == "dead", "count"].iloc[0]) == 3


def test_plot_latent_density_writes_figure_and_table(tmp_path):
    out = {k: tmp_path / f"figs/latent_density.{k}" for k in ("pdf", "png", "tsv")}
    figures_sae.plot_latent_density(
        [_codes_dir(tmp_path)], out_pdf=out["pdf"], out_png=out["png"], out_tsv=out["tsv"]
    )
    assert out["png"].stat().st_size > 5000
    assert set(pd.read_csv(out["tsv"], sep="\t").columns) == {*figures_sae.DENSITY_COLUMNS, "color"}


def _latents(tmp_path, comparison="cmp"):
    rows = []
    for layer in (0, 1, 2, 3, 4):
        for rank, (latent, fa, fb) in enumerate([(7, 0.1, 0.6), (3, 0.0, 0.2)]):
            rows.append(
                dict(
                    direction="freq_gained",
                    latent=latent,
                    freq_a=fa,
                    freq_b=fb,
                    mean_a=0.0,
                    mean_b=0.1,
                    neuronpedia_url=f"https://www.neuronpedia.org/x/{latent}" if rank == 0 else "",
                )
            )
        rows.append(
            dict(
                direction="freq_lost",
                latent=5,
                freq_a=0.5,
                freq_b=0.1 * layer,
                mean_a=0.3,
                mean_b=0.1,
                neuronpedia_url="",
            )
        )
        rows[-3:] = [
            {
                **r,
                "comparison": comparison,
                "base": "llm",
                "adapted": "vlm",
                "sae": "demo",
                "dataset": "cats",
                "layer": layer,
            }
            for r in rows[-3:]
        ]
    path = tmp_path / f"{comparison}.latents.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def test_latents_shift_table_ranks_and_deltas(tmp_path):
    table = figures_sae.latents_shift_table([_latents(tmp_path)])
    assert list(table.columns) == figures_sae.SHIFT_COLUMNS
    g = table[(table.layer == 1) & (table.direction == "freq_gained")].sort_values("rank")
    assert g["latent"].tolist() == [7, 3] and g["delta_freq"].tolist() == pytest.approx([0.5, 0.2])
    assert g["neuronpedia_url"].tolist() == ["https://www.neuronpedia.org/x/7", ""]
    lost = table[(table.layer == 2) & (table.direction == "freq_lost")]
    assert lost["delta_freq"].iloc[0] == pytest.approx(-0.3)
    summary = figures_sae.latents_shift_summary(table)
    s = summary[(summary.layer == 1) & (summary.direction == "freq_gained")]
    assert s["top1"].iloc[0] == pytest.approx(0.5) and s["top10_mean"].iloc[0] == pytest.approx(0.35)


def test_plot_latents_shift_writes_figure_and_table(tmp_path):
    out = {k: tmp_path / f"figs/latents_shift.{k}" for k in ("pdf", "png", "tsv")}
    paths = [_latents(tmp_path, "a"), _latents(tmp_path, "b")]
    table = figures_sae.plot_latents_shift(paths, out_pdf=out["pdf"], out_png=out["png"], out_tsv=out["tsv"])
    assert out["pdf"].stat().st_size > 5000 and out["png"].stat().st_size > 5000
    back = pd.read_csv(out["tsv"], sep="\t", keep_default_na=False)
    assert len(back) == len(table) == 2 * 5 * 3
