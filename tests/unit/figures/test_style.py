"""The palette registry: one colour per model / comparison / control in every figure; outlier-robust limits;
the layer sweep has no empty axes, a legend per row and limits not set by one outlier."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import pandas as pd
import pytest

from repshift.figures import layer_sweep
from repshift.figures.captions import dataset_n, figure_n
from repshift.figures.style import CONTROL_SERIES, MAJORITY_SERIES, Palette, robust_limits

CFG = {
    "models": {"llm": {}, "pali": {}, "llava": {}},
    "datasets": {
        "cats": {"modality": "paired", "classes": ["cat", "dog"], "n_per_class": 20, "folds": 5},
        "prompts": {"modality": "text", "prompts": ["a", "b", "c"]},
    },
    "comparisons": {
        "llm-vs-pali": {"base": "llm", "adapted": "pali", "dataset": "cats", "sae": "s"},
        "llm-vs-pali-prompts": {"base": "llm", "adapted": "pali", "dataset": "prompts", "sae": "s"},
        "llm-vs-llava": {"base": "llm", "adapted": "llava", "dataset": "cats", "sae": "s"},
    },
}


def test_palette_colours_follow_config_order_not_drawing_order():
    p = Palette.from_config(CFG)
    # Okabe-Ito in config order: blue, orange, green (pinned by hand)
    assert [p.model_color(m) for m in ("llm", "pali", "llava")] == ["#0072B2", "#E69F00", "#009E73"]
    # every way a figure names pali's series gets pali's orange
    for series in (
        "pali",
        "pali [cats]",
        "pali [text]",
        "llm -> pali [text]",
        "pali [text -> image]",
        "llm-vs-pali",
    ):
        assert p.color(series) == "#E69F00", series
    assert p.color("llm-vs-llava") == "#009E73"
    # a series drawn with its n ("llm-vs-llava (n=80)") keeps the comparison's colour and line style
    assert p.style("llm-vs-llava (n=80)") == p.style("llm-vs-llava")
    assert p.style("llm-vs-pali-prompts (n=5)") == p.style("llm-vs-pali-prompts")
    # a comparison on the second dataset: same colour, its dataset's line style
    assert p.style("llm-vs-pali-prompts").ls == "--" and p.style("llm-vs-pali").ls == "-"
    assert (p.style(CONTROL_SERIES).color, p.style(CONTROL_SERIES).ls) == ("#7F7F7F", "--")
    assert (p.style(MAJORITY_SERIES).color, p.style(MAJORITY_SERIES).ls) == ("#000000", ":")
    # "llm" inside "llm-vs-..." or "llm2" is not the model llm
    assert Palette.from_config({"models": {"llm2": {}, "llm": {}}}).color("llm2 [text]") == "#0072B2"
    assert Palette.from_params(p.to_params()) == p


def test_robust_limits_ignore_one_outlier_but_keep_references():
    lo, hi = robust_limits([0.8, 0.85, 0.9, 0.95, 0.9, 2.2], refs=[0.0, 1.0])
    assert hi < 1.2 and lo < 0.0  # 2.2 is outside Tukey's far fence; 0 and 1 stay in view
    lo, hi = robust_limits([1.0, 2.0, 3.0])
    assert lo < 1.0 and hi > 3.0


def test_captions_state_n_from_the_config():
    assert dataset_n(CFG, "cats") == "cats: 40 images, 2 classes x 20 (each with a caption)"
    assert dataset_n(CFG, "prompts") == "prompts: 3 prompts"
    assert (
        figure_n(CFG, "latents_shift")
        == "cats: 40 images, 2 classes x 20 (each with a caption); prompts: 3 prompts."
    )


@pytest.fixture
def sweep_inputs(tmp_path):
    rows = []
    for comparison in CFG["comparisons"]:
        for layer in range(4):
            rows.append(
                {"comparison": comparison, "metric": "mean_code_cosine", "layer": layer, "value": 1.0}
            )
    shift = tmp_path / "shift.tsv"
    pd.DataFrame(rows).to_csv(shift, sep="\t", index=False)
    rows = []
    for model in ("llm", "pali"):
        for layer in range(4):
            v = 2.2 if (model, layer) == ("pali", 3) else 0.8 + 0.02 * layer
            for metric, value in (("ce_loss_recovered", v), ("fvu", 0.2)):
                rows.append({"sae": "s", "model": model, "dataset": "cats", "layer": layer, "metric": metric,
                             "value": value, "position_kind": "text"})  # fmt: skip
    transfer = tmp_path / "transfer.tsv"
    pd.DataFrame(rows).to_csv(transfer, sep="\t", index=False)
    return shift, transfer


def test_layer_sweep_colours_axes_legends_and_outlier(sweep_inputs, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    shift, transfer = sweep_inputs
    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    out = {k: tmp_path / f"ls.{k}" for k in ("pdf", "png", "tsv")}
    table = layer_sweep.layer_sweep([shift], [transfer], [], out_pdf=out["pdf"], out_png=out["png"],
                                    out_tsv=out["tsv"], palette=Palette.from_config(CFG))  # fmt: skip
    tsv = pd.read_csv(out["tsv"], sep="\t")
    assert tsv.groupby("series")["color"].nunique().max() == 1
    assert set(tsv.loc[tsv["series"].isin(["pali", "llm-vs-pali"]), "color"]) == {"#E69F00"}
    assert len(table) == 3 * 4 + 2 * 4 * 2
    fig = figs[0]
    axes = [ax for sf in fig.subfigs for ax in sf.axes]
    assert len(axes) == 3  # one shift panel + FVU + CE recovered: no empty cells
    assert all(ax.lines for ax in axes)
    assert all(sf.legends for sf in fig.subfigs)
    ce = next(ax for ax in axes if "recovered" in ax.get_title())
    assert ce.get_ylim()[1] < 1.3  # the 2.2 outlier does not set the scale ...
    assert any("2.2" in t.get_text() for t in ce.texts)  # ... it is marked with its value
    assert {0.0, 1.0} <= {
        round(float(line.get_ydata()[0]), 6) for line in ce.lines if len(set(line.get_ydata())) == 1
    }
