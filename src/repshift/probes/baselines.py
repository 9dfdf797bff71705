"""Pixel-statistics baseline for attribute tasks: what a probe reads off trivial per-image statistics.

If a probe on a dozen numbers per image (mean luma, channel means and spreads, chroma, sharpness, black corners)
solves an attribute task as well as a probe on a model's activations, the activations' score says little about
what the model represents beyond those statistics. The statistics are taken on the image as the model receives
it: the variant (``load_example_image``, transform applied) squashed to ``input_size`` x ``input_size`` like the
processor does.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
from PIL import Image

from repshift.data.images import _LUMA, DEFAULT_INPUT_SIZE, load_example_image
from repshift.probes.cv import ProbeSettings
from repshift.probes.suite import evaluate_probe, majority_baseline

logger = logging.getLogger(__name__)


#: Column names of :func:`pixel_statistics`, in order.
PIXEL_FEATURES = (
    "mean_luma",
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "mean_chroma",
    "mean_abs_laplacian",
    "black_fraction",
)


def pixel_statistics(img: Image.Image, input_size: int | None = DEFAULT_INPUT_SIZE) -> np.ndarray:
    """The :data:`PIXEL_FEATURES` of one RGB image (0..255 scale), after a bicubic squash to ``input_size``
    (None: as is). Sharpness is the mean |4-neighbour Laplacian| of luma over interior pixels; black_fraction the
    share of pixels with every channel 0 (rotation corners)."""
    if img.mode != "RGB":
        raise ValueError(f"pixel_statistics expects an RGB image, got mode {img.mode}")
    if input_size is not None:
        img = img.resize((input_size, input_size), Image.Resampling.BICUBIC)
    arr_HWC = np.asarray(img, dtype=np.float64)
    luma_HW = arr_HWC @ _LUMA
    lap = (
        4 * luma_HW[1:-1, 1:-1]
        - luma_HW[:-2, 1:-1]
        - luma_HW[2:, 1:-1]
        - luma_HW[1:-1, :-2]
        - luma_HW[1:-1, 2:]
    )
    return np.array(
        [
            luma_HW.mean(),
            *arr_HWC.mean(axis=(0, 1)),
            *arr_HWC.std(axis=(0, 1)),
            (arr_HWC.max(axis=-1) - arr_HWC.min(axis=-1)).mean(),
            np.abs(lap).mean() if lap.size else 0.0,
            (arr_HWC.max(axis=-1) == 0).mean(),
        ]
    )


def pixel_features(
    df: pd.DataFrame, image_dir: str | os.PathLike, *, input_size: int | None = DEFAULT_INPUT_SIZE
) -> np.ndarray:
    """:func:`pixel_statistics` of every row of a manifest (image rows only): an ``(N, len(PIXEL_FEATURES))``
    array in row order. Text rows are an error naming the first one."""
    text = df.index[df["modality"] != "image"]
    if len(text):
        raise ValueError(
            f"pixel_features reads image rows only; row {df.loc[text[0], 'example_id']!r} is "
            f"{df.loc[text[0], 'modality']!r} (select modality == 'image' first)"
        )
    feats = [
        pixel_statistics(load_example_image(row, image_dir), input_size) for row in df.to_dict("records")
    ]
    return np.asarray(feats, dtype=np.float64).reshape(len(df), len(PIXEL_FEATURES))


def pixel_baseline(
    df: pd.DataFrame,
    image_dir: str | os.PathLike,
    *,
    settings: ProbeSettings,
    input_size: int | None = DEFAULT_INPUT_SIZE,
) -> pd.DataFrame:
    """The logistic probe (the one engine, the manifest's stored folds grouped by base image) on
    :func:`pixel_features`, plus (per ``settings.control``) the shuffled-label control and the majority baseline: tidy rows (:data:`repshift.probes.cv.ROW_COLUMNS`)."""
    images = df[df["modality"] == "image"].reset_index(drop=True)
    if images.empty:
        raise ValueError("pixel_baseline needs image rows; this manifest has none")
    X_NF = pixel_features(images, image_dir, input_size=input_size)
    y_N, folds_N, groups_N = (images[c].to_numpy(np.int64) for c in ("label", "fold", "group"))
    logger.info("pixel baseline: %d image rows, %d statistics", *X_NF.shape)
    frames = [
        evaluate_probe(
            X_NF, y_N, folds_N, settings=settings, groups_N=groups_N, kind=kind, names=("pixels", "pixels")
        )
        for kind in (("logreg", "control") if settings.control else ("logreg",))
    ]
    frames.append(majority_baseline(y_N, folds_N, groups_N=groups_N))
    return pd.concat(frames, ignore_index=True)
