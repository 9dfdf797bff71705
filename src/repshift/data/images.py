"""Images: the one loader (RGB rules, bad-file errors), validation, attribute transforms, contact sheets."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from repshift.formats.atomic import atomic_path

logger = logging.getLogger(__name__)


ATTRIBUTES = ("brightness", "redness", "saturation", "contrast", "blur", "rotation")


class ImageLoadError(OSError):
    """An image file is missing, unreadable, truncated or in a mode that cannot become RGB."""


def _image_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable image, or None. Cheap: verify() then a reduced-size (draft) decode."""
    if not path.is_file():
        return "missing file"
    if path.stat().st_size == 0:
        return "empty file"
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))  # JPEG: DCT-scaled decode; still reads the whole stream
            im.load()
    except Exception as exc:  # PIL raises many types for bad files
        return f"cannot decode ({type(exc).__name__}: {exc})"
    return None


def validate_images(df: pd.DataFrame, image_dir: str | os.PathLike) -> dict[str, str]:
    """Check that each distinct ``file`` of ``df`` exists and decodes; return ``{file: reason}`` of bad ones.

    Uses ``PIL.Image.verify()`` plus a reduced-size decode (which catches truncated JPEGs that
    ``verify()`` accepts). The manifest builder calls it on the images it selects for image modalities.
    """
    image_dir = Path(image_dir)
    bad: dict[str, str] = {}
    for fname in sorted(set(df["file"])):
        problem = _image_problem(image_dir / fname)
        if problem is not None:
            bad[fname] = problem
    if bad:
        logger.warning("validate_images: %d of %d files unusable", len(bad), df["file"].nunique())
    return bad


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB by fixed rules.

    * RGB: unchanged (copied).
    * alpha (RGBA, LA, PA, RGBa, La) and palette images with a transparency entry: composited over white,
      as ``transformers.image_transforms.convert_to_rgb`` does.
    * grayscale L / 1: replicated to three channels; 16-bit grayscale (I;16*, I): divided by 257 (0..65535
      -> 0..255); float F: clipped to 0..255.
    * CMYK, YCbCr, P, LAB, HSV: PIL's ``convert("RGB")`` (ICC profiles ignored).
    * multi-frame files: the first frame.
    """
    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if mode.startswith("I;16") or mode == "I":
        arr = np.clip(np.asarray(im).astype(np.float64), 0, 65535) / 257.0
        return Image.fromarray(np.rint(arr).astype(np.uint8), mode="L").convert("RGB")
    if mode == "F":
        arr = np.clip(np.asarray(im, dtype=np.float64), 0, 255)
        return Image.fromarray(np.rint(arr).astype(np.uint8), mode="L").convert("RGB")
    if "A" in mode or "a" in mode or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _get(row: Any, key: str) -> Any:
    if isinstance(row, Mapping) or (hasattr(row, "__getitem__") and not isinstance(row, tuple)):
        return row[key]
    return getattr(row, key)


def load_example_image(row: Any, image_dir: str | os.PathLike) -> Image.Image:
    """THE image loader used at extraction: open ``row['file']``, convert to RGB, apply ``row['transform']``.

    The transform is applied in memory (no re-encoding, so every variant of a base image starts from the
    same decoded pixels). ``row`` may be a pandas row, a dict or a namedtuple with ``file`` and ``transform``.
    Raises :class:`ImageLoadError` naming the file when it is missing, corrupt or truncated.
    """
    path = Path(image_dir) / str(_get(row, "file"))
    transform = _get(row, "transform")
    transform = (
        "" if transform is None or (isinstance(transform, float) and math.isnan(transform)) else transform
    )
    try:
        with Image.open(path) as im:
            im.load()
            rgb = to_rgb(im)
    except FileNotFoundError as exc:
        raise ImageLoadError(f"image file not found: {path}") from exc
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ...
        raise ImageLoadError(f"cannot load image {path}: {type(exc).__name__}: {exc}") from exc
    return apply_transform(rgb, str(transform))


_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, as PIL's convert("L")

#: Transforms whose parameter is a length or an angle in the model's input image (``"blur:1.5@224"``).
SIZED_ATTRIBUTES = ("blur", "rotation")

#: Default side of the model's (square) input image, in pixels: PaliGemma-2-224 and SigLIP-224 resize every
#: image to 224 x 224 without keeping the aspect ratio.
DEFAULT_INPUT_SIZE = 224

#: Saturation variants of a base image whose mean chroma (per-pixel max(R,G,B) - min(R,G,B), 0..255, on a
#: thumbnail) is below this are skipped: on a grey photo luma + f*(x - luma) is the same image for every f.
DEFAULT_MIN_CHROMA = 8.0


def _check_parameter(name: str, value: float, *, where: str = "transform") -> None:
    if not math.isfinite(value):
        raise ValueError(f"{where}: {name} parameter must be finite, got {value}")
    if name != "rotation" and value < 0:
        raise ValueError(f"{where}: {name} parameter must be >= 0, got {_fmt_number(value)}")


def parse_transform_sized(transform: str) -> tuple[str, float, int | None] | None:
    """``"blur:1.5@224"`` -> ``("blur", 1.5, 224)``; ``"brightness:0.5"`` -> ``("brightness", 0.5, None)``;
    ``""`` -> None. ``@<size>`` (the model's square input side in pixels) only applies to blur and rotation.
    Raises ValueError naming the string."""
    if transform == "":
        return None
    name, sep, value = transform.partition(":")
    if not sep or name not in ATTRIBUTES:
        raise ValueError(
            f"bad transform {transform!r}: expected '<name>:<number>[@<input size>]' with name in {ATTRIBUTES}"
        )
    value, at, size_text = value.partition("@")
    size = None
    if at:
        if name not in SIZED_ATTRIBUTES or not size_text.isdigit() or int(size_text) < 1:
            raise ValueError(
                f"bad transform {transform!r}: '@<input size>' takes a positive integer and applies only to "
                f"{SIZED_ATTRIBUTES}"
            )
        size = int(size_text)
    try:
        x = float(value)
    except ValueError as exc:
        raise ValueError(f"bad transform {transform!r}: {value!r} is not a number") from exc
    _check_parameter(name, x, where=f"transform {transform!r}")
    return name, x, size


def parse_transform(transform: str) -> tuple[str, float] | None:
    """``"brightness:0.5"`` -> ``("brightness", 0.5)``; ``""`` -> None. Raises ValueError naming the string.

    The input size of ``"blur:1.5@224"`` is dropped here; :func:`parse_transform_sized` keeps it."""
    parsed = parse_transform_sized(transform)
    return None if parsed is None else parsed[:2]


def format_transform(name: str, x: float, input_size: int | None = None) -> str:
    """The transform string of one variant; blur and rotation carry the model input size when it is given."""
    text = f"{name}:{_fmt_number(x)}"
    return f"{text}@{int(input_size)}" if input_size is not None and name in SIZED_ATTRIBUTES else text


def _to_float(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64)


def _to_image(arr_HWC: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(arr_HWC), 0, 255).astype(np.uint8), mode="RGB")


def _shift_at_fixed_luma(arr_HWC: np.ndarray, delta_HWC: np.ndarray) -> np.ndarray:
    """``arr + t * delta`` per pixel with the largest ``t`` in [0, 1] that keeps every channel in 0..255.

    ``delta`` must have zero luma (``delta @ _LUMA == 0``): then luma is unchanged exactly, before the final
    rounding to 8 bits (at most 0.5 level per channel, so |luma change| <= 0.5). Shortening the whole shift, rather
    than clipping channels one by one, is what keeps luma fixed where a channel would leave the range.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(delta_HWC > 0, (255.0 - arr_HWC) / delta_HWC, np.inf)
        room = np.where(delta_HWC < 0, -arr_HWC / delta_HWC, room)
    t = np.clip(room.min(axis=-1, keepdims=True), 0.0, 1.0)
    return arr_HWC + t * delta_HWC


def _redness(arr_HWC: np.ndarray, f: float) -> np.ndarray:
    """Red channel times ``f``, green and blue each shifted by ``-0.299 dR / 0.701`` (luma unchanged)."""
    delta = np.zeros_like(arr_HWC)
    d_red = arr_HWC[..., 0] * (f - 1.0)
    delta[..., 0] = d_red
    delta[..., 1] = delta[..., 2] = -_LUMA[0] * d_red / (_LUMA[1] + _LUMA[2])
    return _shift_at_fixed_luma(arr_HWC, delta)


def _model_scale(img: Image.Image, input_size: int | None) -> tuple[float, float]:
    """Original pixels per model-input pixel along x and y (1, 1 without an input size)."""
    if input_size is None:
        return 1.0, 1.0
    return img.width / input_size, img.height / input_size


def _rotate(img: Image.Image, degrees: float, input_size: int | None) -> Image.Image:
    """Counter-clockwise rotation as seen in the model's square input: the image is squashed to a square by the
    processor, so on a W x H original the rotation is conjugated by that squash (an affine map that depends only
    on W/H); on a square image (or without an input size) it is PIL's own rotation."""
    if input_size is None or img.width == img.height:
        return img.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=(0, 0, 0))
    a = -math.radians(degrees)
    cos, sin = round(math.cos(a), 15), round(math.sin(a), 15)
    aspect = img.width / img.height
    m = [cos, sin * aspect, 0.0, -sin / aspect, cos, 0.0]  # output -> input, about the centre
    cx, cy = img.width / 2, img.height / 2
    m[2] = cx - m[0] * cx - m[1] * cy
    m[5] = cy - m[3] * cx - m[4] * cy
    return img.transform(
        img.size, Image.Transform.AFFINE, m, resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0)
    )


def apply_transform(img: Image.Image, transform: str) -> Image.Image:
    """Apply one named transform to an RGB image, in memory; ``""`` returns an exact copy.

    Each transform changes one attribute and holds the others (tested in ``tests/unit/data/test_images.py``):

    * ``brightness:f``  every channel multiplied by f (rounded, clipped to 0..255): chroma ratios unchanged
    * ``redness:f``     red multiplied by f at fixed luma: green and blue each shifted by -0.299*dR/0.701 so that
      0.299R+0.587G+0.114B is unchanged per pixel; where a channel would leave 0..255 the pixel's whole shift is
      shortened (same fraction for all three channels), so luma stays fixed and the pixel gets as red as it can
    * ``saturation:f``  luma + f*(x - luma) with the per-pixel luma, shortened per pixel like redness where a
      channel would leave 0..255 (luma unchanged); achromatic bases are skipped by the dataset builder
    * ``contrast:f``    blend with the image's mean luma: mean + f*(x - mean)
    * ``blur:r@S``      Gaussian blur of radius r pixels *of the model input* (S x S, the processor's resize):
      radius (r*W/S, r*H/S) on the W x H original; ``blur:r`` without ``@S``: r original pixels
    * ``rotation:d@S``  rotate d degrees counter-clockwise as seen in the S x S model input (see :func:`_rotate`),
      same size, bicubic, black corners; ``rotation:d``: plain rotation of the original
    """
    if img.mode != "RGB":
        raise ValueError(f"apply_transform expects an RGB image, got mode {img.mode} (use to_rgb first)")
    parsed = parse_transform_sized(transform)
    if parsed is None:
        return img.copy()
    name, x, size = parsed
    if name == "blur":
        sx, sy = _model_scale(img, size)
        return img.filter(ImageFilter.GaussianBlur(radius=(x * sx, x * sy)))
    if name == "rotation":
        return _rotate(img, x, size)
    arr = _to_float(img)
    if name == "brightness":
        out = arr * x
    elif name == "redness":
        out = _redness(arr, x)
    elif name == "saturation":
        luma = (arr @ _LUMA)[..., None]
        out = _shift_at_fixed_luma(arr, (x - 1.0) * (arr - luma))
    else:  # contrast
        mean = float((arr @ _LUMA).mean())
        out = mean + x * (arr - mean)
    return _to_image(out)


def mean_chroma(img: Image.Image) -> float:
    """Mean over pixels of max(R,G,B) - min(R,G,B) (HSV chroma, 0..255) of an RGB image."""
    arr = np.asarray(img, dtype=np.int16)
    return float((arr.max(axis=-1) - arr.min(axis=-1)).mean())


def image_chroma(path: str | os.PathLike, *, thumb: int = 128) -> float:
    """:func:`mean_chroma` of an image file, measured on a thumbnail of at most ``thumb`` px (cheap on JPEGs)."""
    with Image.open(path) as im:
        im.draft("RGB", (thumb, thumb))
        rgb = to_rgb(im)
    rgb.thumbnail((thumb, thumb), Image.Resampling.BOX)
    return mean_chroma(rgb)


def contact_sheet(
    df: pd.DataFrame,
    image_dir: str | os.PathLike,
    out_png: str | os.PathLike,
    *,
    n: int = 8,
    thumb: int = 128,
) -> None:
    """A labelled PNG grid for eyeballing a dataset.

    Attribute datasets: one row per base image (the first ``n`` groups), columns = the untouched image,
    then each variant in label order, all through :func:`load_example_image`. Other image datasets: one
    row per label, up to ``n`` images each. Text-only manifests have nothing to show (ValueError).
    """
    img_df = df[df["modality"] == "image"]
    if img_df.empty:
        raise ValueError("contact_sheet needs image rows; this manifest has only text rows")
    grid: list[tuple[str, list[tuple[str, Image.Image]]]] = []
    if (img_df["transform"] != "").any():
        for group in sorted(img_df["group"].unique())[:n]:
            rows = img_df[img_df["group"] == group].sort_values("label")
            first = rows.iloc[0]
            cells = [("original", load_example_image({"file": first["file"], "transform": ""}, image_dir))]
            cells += [(r["label_name"], load_example_image(r, image_dir)) for _, r in rows.iterrows()]
            grid.append((str(group), cells))
    else:
        for label in sorted(img_df["label"].unique()):
            rows = img_df[img_df["label"] == label].drop_duplicates("group").head(n)
            name = str(rows["label_name"].iloc[0])
            grid.append(
                (name, [(str(r["image_id"]), load_example_image(r, image_dir)) for _, r in rows.iterrows()])
            )

    font = ImageFont.load_default()
    pad, text_h, left = 4, 14, 90
    n_cols = max(len(cells) for _, cells in grid)
    width = left + n_cols * (thumb + pad) + pad
    height = pad + len(grid) * (thumb + text_h + pad)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (row_label, cells) in enumerate(grid):
        y = pad + r * (thumb + text_h + pad)
        draw.text((pad, y + text_h + thumb // 2), row_label[:14], fill=(0, 0, 0), font=font)
        for c, (cell_label, im) in enumerate(cells):
            x = left + c * (thumb + pad)
            im = ImageOps.contain(im, (thumb, thumb), method=Image.Resampling.BICUBIC)  # up or down
            draw.text((x, y), cell_label[:20], fill=(0, 0, 0), font=font)
            sheet.paste(im, (x, y + text_h))
    with atomic_path(out_png) as tmp:
        sheet.save(tmp, format="PNG")
    logger.info("wrote contact sheet %s (%d rows x %d columns)", out_png, len(grid), n_cols)


def _fmt_number(x: float) -> str:
    """Shortest exact text for a factor: 0.5 -> "0.5", 2.0 -> "2", -15.0 -> "-15"."""
    s = repr(float(x))
    return s[:-2] if s.endswith(".0") else s
