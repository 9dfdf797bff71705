"""Pixel-statistics baseline: hand-computed statistics, a solvable and an unsolvable attribute task, the step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from repshift.formats.manifest import MANIFEST_COLUMNS, assign_folds, write_manifest
from repshift.probes.baselines import PIXEL_FEATURES, pixel_baseline, pixel_features, pixel_statistics
from repshift.probes.cv import ROW_COLUMNS, ProbeSettings
from repshift.probes.steps import pixel_baseline as pixel_baseline_step

SETTINGS = ProbeSettings(c_grid=(0.1, 1.0, 10.0), inner_folds=2, seeds=(0,), control=True)


def test_pixel_statistics_by_hand():
    # constant (90, 120, 30): luma .299*90 + .587*120 + .114*30 = 100.77, chroma 120 - 30 = 90, flat
    stats = dict(
        zip(PIXEL_FEATURES, pixel_statistics(Image.new("RGB", (40, 30), (90, 120, 30))), strict=True)
    )
    assert stats["mean_luma"] == pytest.approx(100.77)
    assert (stats["mean_r"], stats["mean_g"], stats["mean_b"]) == pytest.approx((90, 120, 30))
    assert (stats["std_r"], stats["mean_abs_laplacian"], stats["black_fraction"]) == pytest.approx((0, 0, 0))
    assert stats["mean_chroma"] == pytest.approx(90)
    # left half black, right half white, kept at 8 x 8: black 0.5; luma std 127.5; the Laplacian is 255 on the
    # 2 interior columns next to the edge (of 6), of opposite signs: mean |.| = 255 * 2 / 6 = 85
    half = np.zeros((8, 8, 3), dtype=np.uint8)
    half[:, 4:] = 255
    s = dict(zip(PIXEL_FEATURES, pixel_statistics(Image.fromarray(half), input_size=None), strict=True))
    assert s["black_fraction"] == 0.5 and s["std_r"] == pytest.approx(127.5)
    assert s["mean_abs_laplacian"] == pytest.approx(85.0)


def _manifest(tmp_path, transforms: tuple[str, str], n_base: int = 12) -> pd.DataFrame:
    """An attribute manifest over n_base smooth colour images (48 x 64), two variants each."""
    rng = np.random.default_rng(0)
    image_dir = tmp_path / "images"
    image_dir.mkdir(parents=True)
    rows = []
    for g in range(n_base):
        base = rng.uniform(50, 110, size=3)
        ramp = np.linspace(-20, 20, 64)[None, :, None]
        arr = np.clip(base[None, None, :] + ramp + rng.normal(0, 5, (48, 64, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(image_dir / f"{g}.png")
        for label, t in enumerate(transforms):
            rows.append(
                {
                    "example_id": f"{g}-v{label}",
                    "image_id": g,
                    "group": g,
                    "modality": "image",
                    "file": f"{g}.png",
                    "text": "",
                    "captions": "",
                    "label": label,
                    "label_name": f"v{label}",
                    "transform": t,
                }
            )
    df = pd.DataFrame(rows)
    df["fold"] = assign_folds(df["label"].to_numpy(), df["group"].to_numpy(), n_folds=3, seed=0)
    return df[list(MANIFEST_COLUMNS)]


def test_brightness_is_solved_by_pixels_and_identical_variants_are_not(tmp_path):
    bright = _manifest(tmp_path, ("brightness:0.5", "brightness:1.5"))
    X = pixel_features(bright, tmp_path / "images", input_size=32)
    assert X.shape == (24, len(PIXEL_FEATURES))
    # base luma 50..110 (+-20 ramp): 0.5x stays below ~65, 1.5x above ~75 -> separable by mean luma alone
    assert X[bright["label"] == 0, 0].max() < X[bright["label"] == 1, 0].min()
    rows = pixel_baseline(bright, tmp_path / "images", settings=SETTINGS, input_size=32)
    acc = rows[(rows.probe == "logreg") & (rows.metric == "accuracy")]["value"]
    assert (acc == 1.0).all()
    assert set(rows.probe) == {"logreg", "control", "majority"}
    # both "variants" untransformed: identical features with opposite labels in the same test fold, so exactly one
    # of each pair is right whatever the probe does: accuracy 0.5 in every fold, by construction
    same = _manifest(tmp_path / "same", ("", ""))
    rows = pixel_baseline(same, tmp_path / "same" / "images", settings=SETTINGS, input_size=32)
    acc = rows[(rows.probe == "logreg") & (rows.metric == "accuracy")]["value"]
    np.testing.assert_allclose(acc, 0.5)


def test_pixel_features_refuse_text_rows(tmp_path):
    df = _manifest(tmp_path, ("brightness:0.5", "brightness:1.5"), n_base=3)
    df.loc[1, "modality"] = "text"
    with pytest.raises(ValueError, match="'0-v1' is 'text'"):
        pixel_features(df, tmp_path / "images")


def test_pixel_baseline_step_writes_train_probe_rows(tmp_path):
    df = _manifest(tmp_path, ("brightness:0.5", "brightness:1.5"))
    manifest = tmp_path / "bright.tsv"
    write_manifest(df, {"spec": {"attribute": "brightness"}}, manifest)
    out = tmp_path / "results" / "probes" / "bright" / "pixel_baseline.tsv"
    out.parent.mkdir(parents=True)
    pixel_baseline_step(
        input={"manifest": str(manifest), "images": str(tmp_path / "images")},
        output={"results": str(out)},
        params={"settings": {"c_grid": [1.0], "inner_folds": 2, "seeds": [0, 1]}, "input_size": 32},
        wildcards={"task": "bright"},
    )
    table = pd.read_csv(out, sep="\t")
    train_probe_columns = [
        "task",
        "layer",
        *ROW_COLUMNS,
        "transfer",
        "test_model",
        "test_modality",
        "train_model",
        "train_modality",
        "pooling",
        "target",
    ]
    assert list(table.columns) == train_probe_columns
    assert set(table["task"]) == {"bright"} and set(table["layer"]) == {-1}
    assert set(table["train_model"]) == {"pixels"} and set(table["transfer"]) == {"within"}
    logreg = table[(table.probe == "logreg") & (table.metric == "accuracy")]
    assert len(logreg) == 3 * 2 and (logreg["value"] == 1.0).all()  # 3 folds x 2 seeds
