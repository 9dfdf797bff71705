"""Attribute transforms change one attribute and hold the others (on photo-like images), with hand numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from repshift.data.coco import DatasetSpec, build_manifest, load_coco
from repshift.data.images import apply_transform, image_chroma, parse_transform_sized

LUMA = np.array([0.299, 0.587, 0.114])


def photo_like(h: int = 240, w: int = 320, seed: int = 0, top: float = 160.0) -> Image.Image:
    """A natural-ish RGB image: 1/f (pink) noise luminance with smooth colour fields and fine texture, values in
    ~[20, top]. Not square, so model-input conversions are exercised."""
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w))

    def field(power: float) -> np.ndarray:
        spec = amp**power * np.exp(2j * np.pi * rng.random((h, w)))
        f = np.fft.ifft2(spec).real
        return (f - f.mean()) / f.std()

    luma = field(1.0) + 0.3 * field(0.3)  # large shapes plus texture
    colour = np.stack([field(1.5), field(1.5), field(1.5)], axis=-1)
    arr = luma[..., None] + 0.6 * colour
    lo, hi = np.percentile(arr, [0.5, 99.5])
    arr = 20 + (top - 20) * np.clip((arr - lo) / (hi - lo), 0, 1)
    return Image.fromarray(np.rint(arr).astype(np.uint8), mode="RGB")


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64)


def luma(img: Image.Image) -> np.ndarray:
    return arr(img) @ LUMA


def sharpness(a_HW: np.ndarray) -> float:
    """Mean |4-neighbour Laplacian| of a 2-D array (interior pixels)."""
    lap = 4 * a_HW[1:-1, 1:-1] - a_HW[:-2, 1:-1] - a_HW[2:, 1:-1] - a_HW[1:-1, :-2] - a_HW[1:-1, 2:]
    return float(np.abs(lap).mean())


def to_model(img: Image.Image, size: int = 224) -> Image.Image:
    """What PaliGemma's processor does to the geometry: squash to size x size (bicubic)."""
    return img.resize((size, size), Image.Resampling.BICUBIC)


# ------------------------------------------------------------------------------------------- brightness
def test_brightness_variants_differ_in_luma_only():
    img = photo_like()
    lo, hi = arr(apply_transform(img, "brightness:0.5")), arr(apply_transform(img, "brightness:1.5"))
    # mean luma triples (1.5 / 0.5); values <= 160 never clip at 1.5
    assert (lo @ LUMA).mean() * 3 == pytest.approx((hi @ LUMA).mean(), rel=0.01)
    # same chromaticity R/(R+G+B), G/(R+G+B) per pixel (up to rounding: 1 level level of a sum >= 30: < 0.03)
    for a in (lo, hi):
        assert a.sum(-1).min() >= 30
    chrom_lo, chrom_hi = lo / lo.sum(-1, keepdims=True), hi / hi.sum(-1, keepdims=True)
    assert np.abs(chrom_lo - chrom_hi).max() < 0.03
    assert np.abs(chrom_lo - chrom_hi).mean() < 0.004


# ---------------------------------------------------------------------------------------------- redness
def test_redness_by_hand_keeps_luma_per_pixel():
    # (120, 110, 100), luma 111.85. Plain red scaling gave luma 93.9 (R 60) and 129.8 (R 180).
    # 1.5: dR = +60, G and B each -0.299*60/0.701 = -25.59 -> (180, 84.41, 74.41) -> (180, 84, 74)
    # 0.5: dR = -60, G and B each +25.59 -> (60, 135.59, 125.59) -> (60, 136, 126)
    px = Image.new("RGB", (1, 1), (120, 110, 100))
    assert arr(apply_transform(px, "redness:1.5"))[0, 0].tolist() == [180, 84, 74]
    assert arr(apply_transform(px, "redness:0.5"))[0, 0].tolist() == [60, 136, 126]
    # clipping: (250, 30, 30) at 1.5 wants R 375; R has room 5 of 125 -> whole shift shortened to t = 0.04:
    # R 255, G and B 30 - 0.04*53.32 = 27.87 -> (255, 28, 28); luma 95.78 -> 95.87 (rounding only)
    hot = Image.new("RGB", (1, 1), (250, 30, 30))
    assert arr(apply_transform(hot, "redness:1.5"))[0, 0].tolist() == [255, 28, 28]


def test_redness_variants_differ_in_colour_not_in_luma():
    img = photo_like(top=230)  # bright enough that some pixels need the shortened shift
    lo, hi = apply_transform(img, "redness:0.5"), apply_transform(img, "redness:1.5")
    assert abs(luma(lo).mean() - luma(hi).mean()) < 1.0  # was ~0.3 * mean R = 30+ levels before
    assert np.abs(luma(lo) - luma(img)).max() <= 0.5 + 1e-9
    assert np.abs(luma(hi) - luma(img)).max() <= 0.5 + 1e-9
    red_gap = arr(hi)[..., 0].mean() - arr(lo)[..., 0].mean()
    assert red_gap > 0.8 * arr(img)[..., 0].mean()  # R doubles-ish from 0.5x to 1.5x (minus clipping)


# ------------------------------------------------------------------------------------------- saturation
def test_saturation_variants_keep_luma_and_scale_chroma():
    img = photo_like()
    lo, hi = apply_transform(img, "saturation:0.5"), apply_transform(img, "saturation:1.5")
    assert np.abs(luma(lo) - luma(img)).max() <= 0.5 + 1e-9
    assert np.abs(luma(hi) - luma(img)).max() <= 0.5 + 1e-9
    chroma = {k: arr(v).max(-1) - arr(v).min(-1) for k, v in (("lo", lo), ("hi", hi), ("img", img))}
    # chroma is linear in f around luma: 1.5 / 0.5 = 3 (rounding aside)
    assert chroma["hi"].mean() / chroma["lo"].mean() == pytest.approx(3.0, rel=0.03)
    assert chroma["lo"].mean() == pytest.approx(0.5 * chroma["img"].mean(), abs=0.5)


def _tiny_coco(root: Path, colours: dict[int, tuple[int, int, int] | None]) -> tuple[Path, Path]:
    """A COCO split whose images are photo-like (colour) or grey stored as RGB JPEG (None)."""
    image_dir, ann_dir = root / "val2017", root / "annotations"
    image_dir.mkdir(parents=True)
    ann_dir.mkdir(parents=True)
    images = []
    for img_id, colour in colours.items():
        img = photo_like(96, 128, seed=img_id)
        if colour is None:
            img = img.convert("L").convert("RGB")
        img.save(image_dir / f"{img_id:012d}.jpg", format="JPEG", quality=90)
        images.append({"id": img_id, "file_name": f"{img_id:012d}.jpg", "width": 128, "height": 96})
    cats = [{"id": 1, "name": "thing", "supercategory": "thing"}]
    anns = [
        {"id": i, "image_id": i, "category_id": 1, "area": 10.0, "bbox": [0, 0, 2, 5], "iscrowd": 0}
        for i in colours
    ]
    caps = [{"id": i, "image_id": i, "caption": f"image {i}"} for i in colours]
    (ann_dir / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    (ann_dir / "captions_val2017.json").write_text(json.dumps({"images": images, "annotations": caps}))
    return ann_dir, image_dir


def test_grey_photos_are_skipped_for_saturation_and_counted(tmp_path):
    colours = {i: (None if i % 3 == 0 else (1, 1, 1)) for i in range(1, 13)}  # 3, 6, 9, 12 are grey
    ann_dir, image_dir = _tiny_coco(tmp_path, colours)
    assert image_chroma(image_dir / "000000000003.jpg") < 2  # JPEG keeps a grey image (nearly) grey
    assert image_chroma(image_dir / "000000000001.jpg") > 20
    coco = load_coco(ann_dir)
    d = {"modality": "attribute", "attribute": "saturation", "factors": [0.5, 1.5], "n_base": 8, "folds": 2}
    df, meta = build_manifest(DatasetSpec.from_dict("sat", d), coco, image_dir=image_dir, seed=0)
    assert sorted(df["group"].unique()) == [1, 2, 4, 5, 7, 8, 10, 11]
    assert meta["skipped"]["achromatic"] == 4 and meta["invalid_images"] == []
    # the same bases are fine for brightness, and asking saturation for all 12 names the achromatic count
    d_b = d | {"attribute": "brightness", "n_base": 12}
    df_b, meta_b = build_manifest(DatasetSpec.from_dict("bri", d_b), coco, image_dir=image_dir, seed=0)
    assert df_b["group"].nunique() == 12 and "achromatic" not in meta_b["skipped"]
    with pytest.raises(ValueError, match="4 achromatic"):
        build_manifest(DatasetSpec.from_dict("sat", d | {"n_base": 12}), coco, image_dir=image_dir, seed=0)


def test_attribute_keys_apply_only_where_they_mean_something():
    blur = DatasetSpec.from_dict("b", {"modality": "attribute", "attribute": "blur", "factors": [0.5, 1.5]})
    assert blur.input_size == 224 and blur.min_chroma is None
    sat = DatasetSpec.from_dict("s", {"modality": "attribute", "attribute": "saturation", "factors": [0, 1]})
    assert sat.min_chroma == 8.0 and sat.input_size is None
    with pytest.raises(ValueError, match="input_size only applies"):
        DatasetSpec.from_dict(
            "s", {"modality": "attribute", "attribute": "redness", "factors": [0, 1], "input_size": 9}
        )
    with pytest.raises(ValueError, match="min_chroma only applies"):
        DatasetSpec.from_dict(
            "s", {"modality": "attribute", "attribute": "blur", "factors": [0, 1], "min_chroma": 3}
        )


# --------------------------------------------------------------------------------------------- contrast
def test_contrast_variants_keep_mean_luma_and_scale_its_spread():
    img = photo_like(top=150)  # 0.5..1.5 around the mean stays inside 0..255
    lo, hi = apply_transform(img, "contrast:0.5"), apply_transform(img, "contrast:1.5")
    assert abs(luma(lo).mean() - luma(hi).mean()) < 0.5
    assert luma(hi).std() / luma(lo).std() == pytest.approx(3.0, rel=0.02)


# ------------------------------------------------------------------------------------------------- blur
def test_blur_radius_is_in_model_input_pixels():
    assert parse_transform_sized("blur:1.5@224") == ("blur", 1.5, 224)
    # a 448 x 448 image is halved by the processor: 1 model pixel = 2 original pixels
    sq = photo_like(448, 448, seed=1)
    np.testing.assert_array_equal(
        arr(apply_transform(sq, "blur:1@224")), arr(sq.filter(ImageFilter.GaussianBlur(2)))
    )
    # on a 320 x 240 photo, blurring then squashing to 224 ~ squashing then blurring by r model pixels,
    # while the old reading (r original pixels) shrinks to ~r*224/320 and misses by far more
    img = photo_like(seed=2)
    target = arr(to_model(img).filter(ImageFilter.GaussianBlur(1.5)))
    new = np.abs(arr(to_model(apply_transform(img, "blur:1.5@224"))) - target).mean()
    old = np.abs(arr(to_model(apply_transform(img, "blur:1.5"))) - target).mean()
    assert new < 0.5 * old


def test_blur_variants_keep_mean_colour_and_lose_sharpness():
    img = photo_like(seed=3)
    lo, hi = apply_transform(img, "blur:0.5@224"), apply_transform(img, "blur:1.5@224")
    np.testing.assert_allclose(arr(lo).mean((0, 1)), arr(hi).mean((0, 1)), atol=0.5)
    np.testing.assert_allclose(luma(lo).std(), luma(hi).std(), rtol=0.15)  # large shapes keep the spread
    assert sharpness(luma(to_model(hi))) < 0.7 * sharpness(luma(to_model(lo)))


# --------------------------------------------------------------------------------------------- rotation
def test_rotation_is_a_rotation_of_the_model_input():
    img = photo_like(seed=4)
    # rotating the 320 x 240 original "as seen at 224 x 224" ~ rotating the squashed image
    target = arr(to_model(img).rotate(30, resample=Image.Resampling.BICUBIC))
    new = np.abs(arr(to_model(apply_transform(img, "rotation:30@224"))) - target)
    old = np.abs(arr(to_model(apply_transform(img, "rotation:30"))) - target)
    assert new.mean() < 0.5 * old.mean()
    # a square image: the plain rotation, exactly (90 degrees is an exact quarter turn)
    sq = photo_like(64, 64, seed=5)
    np.testing.assert_array_equal(arr(apply_transform(sq, "rotation:90@224")), np.rot90(arr(sq)))


def test_rotation_variants_have_the_same_corners_and_colour():
    img = photo_like(seed=6)
    lo, hi = arr(apply_transform(img, "rotation:-15@224")), arr(apply_transform(img, "rotation:15@224"))
    black_lo, black_hi = (lo.max(-1) == 0).mean(), (hi.max(-1) == 0).mean()
    assert black_lo > 0.03 and abs(black_lo - black_hi) < 0.002  # mirror-image corners, same area
    inside = (lo.max(-1) > 0) & (hi.max(-1) > 0)
    np.testing.assert_allclose(lo[inside].mean(0), hi[inside].mean(0), atol=3.0)
