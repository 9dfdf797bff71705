"""Figures: each figure's TSV matches the probe tables it was drawn from; files are written; the layer x layer
matrix's diagonal is the cross-modal probe of train_probe."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from repshift.figures import layer_sweep
from repshift.figures import probes as figures_probes
from repshift.probes import cv as probes_cv
from repshift.probes import saved as probes_saved
from repshift.probes import suite as probes_suite
from repshift.probes import summary as probes_summary

SETTINGS = probes_cv.ProbeSettings(c_grid=(0.1, 1.0), inner_folds=2, seeds=(0, 1), train_fractions=(0.5,))


def _data(seed: int, n: int = 80, d: int = 6, signal: float = 1.5):
    """Paired 'caption' and 'image' features of the same n/2 base images, binary labels, 4 grouped folds."""
    rng = np.random.default_rng(seed)
    groups = np.arange(n)
    y = groups % 2
    folds = (groups // 2) % 4
    shared = rng.normal(size=(n, d))
    text = shared + signal * np.outer(2 * y - 1, np.eye(d)[0]) + rng.normal(size=(n, d))
    image = shared + signal * np.outer(2 * y - 1, np.eye(d)[0]) + rng.normal(size=(n, d))
    return text, image, y, folds, groups


@pytest.fixture(scope="module")
def probe_tables(tmp_path_factory):
    """train_probe-shaped TSVs for two layers of a label task (with a learning curve and a cross-modal transfer)
    and an attribute task, plus each layer's fold probes and features."""
    out = tmp_path_factory.mktemp("probes")
    paths, layers = [], {}
    for layer in (0, 3):
        text, image, y, folds, groups = _data(layer)
        rows, fold_probes = probes_suite.fit_probe_suite(
            text,
            y,
            folds,
            settings=SETTINGS,
            groups_N=groups,
            other_spaces=[probes_suite.EvalSpace("vlm image", image, y, folds, groups)],
        )
        info = {"train_model": "vlm", "test_model": "vlm", "train_modality": "text"}
        within = rows[rows.test_space == "same"].assign(transfer="within", test_modality="text", **info)
        cross = rows[rows.test_space == "vlm image"].assign(
            test_space="other", transfer="cross-modal", test_modality="image", **info
        )
        for task, table in (("categories", pd.concat([within, cross])), ("brightness", within)):
            table = table.assign(task=task, layer=layer)
            path = out / f"{task}-layer-{layer}.tsv"
            table.to_csv(path, sep="\t", index=False)
            paths.append((task, path))
        layers[layer] = (fold_probes, image, y, folds, cross)
    return paths, layers


def test_probe_tasks_tsv_matches_the_probe_tables(probe_tables, tmp_path):
    paths, _ = probe_tables
    table = figures_probes.probe_tasks(
        [p for _, p in paths],
        out_pdf=tmp_path / "f.pdf",
        out_png=tmp_path / "f.png",
        out_tsv=tmp_path / "f.tsv",
    )
    assert (tmp_path / "f.pdf").stat().st_size > 5_000 and (tmp_path / "f.png").stat().st_size > 5_000
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "f.tsv", sep="\t"), table, check_dtype=False)
    src = pd.concat(pd.read_csv(p, sep="\t") for _, p in paths)
    for (task, layer), g in src[(src.metric == "accuracy") & (src.probe == "logreg")].groupby(
        ["task", "layer"]
    ):
        full = g[
            (g.train_fraction == 1) & (g.transfer == "within")
        ]  # learning-curve rows are not in this figure
        row = table[
            (table.panel == f"{task}: within-model accuracy")
            & (table.series == "vlm [text]")
            & (table.layer == layer)
        ].iloc[0]
        runs = full.groupby("fold")[["value", "n_train", "n_test"]].mean()  # seeds averaged within a fold-run
        mean, lo, hi = probes_summary.corrected_interval(
            runs["value"], runs["n_train"].mean(), runs["n_test"].mean()
        )
        assert (
            row["value"] == pytest.approx(mean)
            and row["lo"] == pytest.approx(lo)
            and row["hi"] == pytest.approx(hi)
        )
        assert row["lo"] < row["value"] < row["hi"]
        control = table[
            (table.panel == f"{task}: within-model accuracy") & (table.series == layer_sweep.CONTROL_SERIES)
        ]
        expected = src[
            (src.task == task) & (src.layer == layer) & (src.probe == "control") & (src.metric == "accuracy")
        ]
        expected = expected[expected.transfer == "within"]["value"].mean()
        assert control[control.layer == layer]["value"].iloc[0] == pytest.approx(expected)


def test_attribute_probes_one_panel_per_task_with_vision_axis(probe_tables, tmp_path):
    paths, _ = probe_tables
    attr = [p for t, p in paths if t == "brightness"]
    table = figures_probes.attribute_probes(
        attr,
        out_pdf=tmp_path / "a.pdf",
        out_png=tmp_path / "a.png",
        out_tsv=tmp_path / "a.tsv",
        vision_tasks=(),
    )
    assert set(table.panel) == {"brightness: accuracy"}
    assert {"vlm [text]", layer_sweep.CONTROL_SERIES, layer_sweep.MAJORITY_SERIES} == set(table.series)
    assert not table.duplicated(["panel", "series", "layer"]).any()
    assert (tmp_path / "a.png").stat().st_size > 5_000


def test_learning_curve_table_per_fraction(probe_tables, tmp_path):
    paths, _ = probe_tables
    table = figures_probes.learning_curves(
        [p for _, p in paths],
        out_pdf=tmp_path / "l.pdf",
        out_png=tmp_path / "l.png",
        out_tsv=tmp_path / "l.tsv",
    )
    src = pd.concat(pd.read_csv(p, sep="\t") for _, p in paths)
    lines = table[table.layer >= 0]
    assert set(lines.train_fraction) == {0.5, 1.0}
    for _, row in lines.iterrows():
        task = row.panel.split(":")[0]
        g = src[
            (src.task == task)
            & (src.layer == row.layer)
            & (src.train_fraction == row.train_fraction)
            & (src.probe == "logreg")
            & (src.metric == "accuracy")
            & (src.transfer == "within")
        ]
        assert row["value"] == pytest.approx(g["value"].mean())
        assert row["n_train"] == pytest.approx(g["n_train"].mean())
    half = lines[lines.train_fraction == 0.5]["n_train"].to_numpy()
    full = lines[lines.train_fraction == 1.0]["n_train"].to_numpy()
    assert (half < full).all()
    assert set(table[table.layer < 0].series) == {layer_sweep.CONTROL_SERIES, layer_sweep.MAJORITY_SERIES}
    assert (tmp_path / "l.png").stat().st_size > 5_000


def test_cross_modal_matrix_diagonal_is_the_cross_modal_probe(probe_tables, tmp_path):
    _, layers = probe_tables
    fold_probes = {layer: fp for layer, (fp, *_rest) in layers.items()}
    tests = {layer: (image, y, folds) for layer, (_, image, y, folds, _c) in layers.items()}
    scores = probes_saved.cross_layer_scores(fold_probes, tests)
    assert len(scores.groupby(["train_layer", "test_layer"])) == 4
    for layer, (*_rest, cross) in layers.items():
        diagonal = scores[(scores.train_layer == layer) & (scores.test_layer == layer)]
        logreg = cross[(cross.probe == "logreg") & (cross.train_fraction == 1)]
        pd.testing.assert_frame_equal(
            diagonal.drop(columns=["train_layer", "test_layer"])
            .sort_values(["seed", "fold", "metric"])
            .reset_index(drop=True),
            logreg[list(probes_cv.ROW_COLUMNS)]
            .sort_values(["seed", "fold", "metric"])
            .reset_index(drop=True),
            check_exact=False,
        )
    path = tmp_path / "cross_modal_layers.tsv"
    majority = pd.DataFrame(
        [{"probe": "majority", "metric": "accuracy", "value": 0.5, "train_layer": -1, "test_layer": -1}]
    )
    pd.concat([scores, majority]).assign(
        task="categories", model="vlm", train_modality="text", test_modality="image"
    ).to_csv(path, sep="\t", index=False)
    table = figures_probes.cross_modal_matrix(
        [path], out_pdf=tmp_path / "m.pdf", out_png=tmp_path / "m.png", out_tsv=tmp_path / "m.tsv"
    )
    assert set(table.panel) == {"categories: vlm, text -> image"} and len(table) == 4
    assert (table.majority == 0.5).all()
    for layer, (*_rest, cross) in layers.items():
        cell = table[(table.train_layer == layer) & (table.test_layer == layer)].iloc[0]
        acc = cross[(cross.probe == "logreg") & (cross.metric == "accuracy") & (cross.train_fraction == 1)][
            "value"
        ]
        assert cell["value"] == pytest.approx(acc.mean()) and cell["n"] == len(acc)
    assert (tmp_path / "m.png").stat().st_size > 5_000
