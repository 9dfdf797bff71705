"""A tiny synthetic dataset in genuine COCO 2017 format, for tests and the demo profile.

The layout, file names and JSON schema are those of the real COCO 2017 release, so that everything downstream
(``pycocotools.coco.COCO``, the dataset builders, the rules) runs on it unchanged::

    root/val2017/000000123456.jpg
    root/annotations/instances_val2017.json
    root/annotations/captions_val2017.json

The categories list holds all 80 real COCO categories (real ids, names and supercategories), but only six
get images: person, car, cat, dog, pizza and chair. Each of the six is drawn with its own shape, colour and
texture, so that a probe on pixels (or on a vision model's activations) can separate them. Most images hold
one object; about 15% hold two objects of different categories (for multi-label rules); a few hold none.
Every image gets five captions that name all of its objects (or say that the picture is empty).

Everything is drawn from ``seed`` (and the split name): two runs with the same arguments write byte-identical
files (fixed JPEG quality, JSON with sorted keys).
"""

from __future__ import annotations

import io
import json
import logging
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from repshift.formats.atomic import atomic_dir, write_text

log = logging.getLogger(__name__)

#: JPEG quality for every synthetic image (one value for all: no quality confound between categories).
JPEG_QUALITY = 90

#: Fraction of images with two objects of different categories.
TWO_OBJECT_FRACTION = 0.15

#: The 80 COCO 2017 categories as (id, name, supercategory), exactly as in instances_val2017.json.
COCO_CATEGORIES: tuple[tuple[int, str, str], ...] = (
    (1, "person", "person"),
    (2, "bicycle", "vehicle"),
    (3, "car", "vehicle"),
    (4, "motorcycle", "vehicle"),
    (5, "airplane", "vehicle"),
    (6, "bus", "vehicle"),
    (7, "train", "vehicle"),
    (8, "truck", "vehicle"),
    (9, "boat", "vehicle"),
    (10, "traffic light", "outdoor"),
    (11, "fire hydrant", "outdoor"),
    (13, "stop sign", "outdoor"),
    (14, "parking meter", "outdoor"),
    (15, "bench", "outdoor"),
    (16, "bird", "animal"),
    (17, "cat", "animal"),
    (18, "dog", "animal"),
    (19, "horse", "animal"),
    (20, "sheep", "animal"),
    (21, "cow", "animal"),
    (22, "elephant", "animal"),
    (23, "bear", "animal"),
    (24, "zebra", "animal"),
    (25, "giraffe", "animal"),
    (27, "backpack", "accessory"),
    (28, "umbrella", "accessory"),
    (31, "handbag", "accessory"),
    (32, "tie", "accessory"),
    (33, "suitcase", "accessory"),
    (34, "frisbee", "sports"),
    (35, "skis", "sports"),
    (36, "snowboard", "sports"),
    (37, "sports ball", "sports"),
    (38, "kite", "sports"),
    (39, "baseball bat", "sports"),
    (40, "baseball glove", "sports"),
    (41, "skateboard", "sports"),
    (42, "surfboard", "sports"),
    (43, "tennis racket", "sports"),
    (44, "bottle", "kitchen"),
    (46, "wine glass", "kitchen"),
    (47, "cup", "kitchen"),
    (48, "fork", "kitchen"),
    (49, "knife", "kitchen"),
    (50, "spoon", "kitchen"),
    (51, "bowl", "kitchen"),
    (52, "banana", "food"),
    (53, "apple", "food"),
    (54, "sandwich", "food"),
    (55, "orange", "food"),
    (56, "broccoli", "food"),
    (57, "carrot", "food"),
    (58, "hot dog", "food"),
    (59, "pizza", "food"),
    (60, "donut", "food"),
    (61, "cake", "food"),
    (62, "chair", "furniture"),
    (63, "couch", "furniture"),
    (64, "potted plant", "furniture"),
    (65, "bed", "furniture"),
    (67, "dining table", "furniture"),
    (70, "toilet", "furniture"),
    (72, "tv", "electronic"),
    (73, "laptop", "electronic"),
    (74, "mouse", "electronic"),
    (75, "remote", "electronic"),
    (76, "keyboard", "electronic"),
    (77, "cell phone", "electronic"),
    (78, "microwave", "appliance"),
    (79, "oven", "appliance"),
    (80, "toaster", "appliance"),
    (81, "sink", "appliance"),
    (82, "refrigerator", "appliance"),
    (84, "book", "indoor"),
    (85, "clock", "indoor"),
    (86, "vase", "indoor"),
    (87, "scissors", "indoor"),
    (88, "teddy bear", "indoor"),
    (89, "hair drier", "indoor"),
    (90, "toothbrush", "indoor"),
)

_Polygon = list[tuple[float, float]]  # vertices in the unit square, (x, y), y pointing down


@dataclass(frozen=True)
class _Look:
    """How one category is drawn and described."""

    name: str
    colour_RGB: tuple[int, int, int]
    accent_RGB: tuple[int, int, int]
    texture: str  # solid | hstripes | dstripes | spots | checker
    aspect: float  # width / height of the object's box
    colour_word: str
    texture_word: str


_LOOKS: dict[str, _Look] = {
    "person": _Look("person", (150, 45, 190), (105, 25, 140), "solid", 0.55, "purple", "standing"),
    "car": _Look("car", (35, 75, 210), (200, 215, 240), "hstripes", 1.7, "blue", "shiny"),
    "cat": _Look("cat", (245, 135, 15), (125, 60, 10), "dstripes", 1.0, "orange", "striped"),
    "dog": _Look("dog", (125, 70, 30), (65, 35, 12), "spots", 1.1, "brown", "spotted"),
    "pizza": _Look("pizza", (245, 220, 50), (200, 40, 30), "spots", 1.0, "yellow", "cheesy"),
    "chair": _Look("chair", (20, 185, 60), (150, 240, 150), "checker", 0.8, "green", "checkered"),
}

#: The six categories that get images, in COCO id order.
DEMO_CATEGORIES: tuple[str, ...] = ("person", "car", "cat", "dog", "pizza", "chair")

_BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "white": (228, 228, 228),
    "dark grey": (80, 80, 80),
    "beige": (214, 202, 176),
    "pale blue": (178, 196, 220),
}


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 20) -> _Polygon:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return [(cx + rx * float(np.cos(a)), cy + ry * float(np.sin(a))) for a in t]


def _rect(x0: float, y0: float, x1: float, y1: float) -> _Polygon:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _shape(name: str) -> list[_Polygon]:
    """The category's silhouette as polygons in the unit square (their union is the object)."""
    if name == "person":  # head over a body with legs
        return [
            _ellipse(0.5, 0.14, 0.22, 0.13),
            [(0.15, 0.3), (0.85, 0.3), (0.85, 0.7), (0.72, 1.0), (0.55, 1.0), (0.5, 0.75)]
            + [(0.45, 1.0), (0.28, 1.0), (0.15, 0.7)],
        ]
    if name == "car":  # body, cabin, two wheels
        return [
            _rect(0.0, 0.4, 1.0, 0.82),
            [(0.2, 0.4), (0.32, 0.0), (0.7, 0.0), (0.82, 0.4)],
            _ellipse(0.24, 0.82, 0.12, 0.18),
            _ellipse(0.76, 0.82, 0.12, 0.18),
        ]
    if name == "cat":  # a face with two pointed ears
        ears = [(0.05, 0.35), (0.18, 0.0), (0.38, 0.28), (0.62, 0.28), (0.82, 0.0), (0.95, 0.35)]
        return [[(0.05, 1.0), *ears, (0.95, 1.0)]]
    if name == "dog":  # a round head with two drooping ears
        return [
            _ellipse(0.5, 0.55, 0.36, 0.42),
            _ellipse(0.12, 0.45, 0.12, 0.38),
            _ellipse(0.88, 0.45, 0.12, 0.38),
        ]
    if name == "pizza":  # a round pizza with one slice taken out
        rim = [
            (0.5 + 0.5 * float(np.cos(a)), 0.5 - 0.5 * float(np.sin(a))) for a in np.linspace(0.6, 5.8, 24)
        ]
        return [[(0.5, 0.5), *rim]]
    if name == "chair":  # back, seat, two legs
        back, seat = _rect(0.0, 0.0, 0.36, 0.62), _rect(0.0, 0.48, 1.0, 0.72)
        return [back, seat, _rect(0.0, 0.6, 0.24, 1.0), _rect(0.76, 0.6, 1.0, 1.0)]
    raise ValueError(f"no drawing for category {name!r}; known: {sorted(_LOOKS)}")


def _texture(look: _Look, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An (h, w, 3) float image: the category's colour with its texture, at a random phase."""
    yy, xx = np.mgrid[0:h, 0:w]
    period = int(rng.integers(4, 7))
    phase = int(rng.integers(0, period))
    if look.texture == "solid":
        accent = np.zeros((h, w), dtype=bool)
    elif look.texture == "hstripes":
        accent = ((yy + phase) // period) % 3 == 0
    elif look.texture == "dstripes":
        accent = ((xx + yy + phase) // period) % 2 == 0
    elif look.texture == "checker":
        accent = (((xx + phase) // period) + ((yy + phase) // period)) % 2 == 0
    elif look.texture == "spots":
        cy = (yy + phase) % (period + 2) - (period + 1) / 2
        cx = (xx + 2 * phase) % (period + 2) - (period + 1) / 2
        accent = cy**2 + cx**2 <= (period / 3.2) ** 2
    else:  # pragma: no cover - _LOOKS is fixed above
        raise ValueError(f"unknown texture {look.texture!r}")
    out = np.empty((h, w, 3), dtype=np.float64)
    out[:] = look.colour_RGB
    out[accent] = look.accent_RGB
    return out


def _place(polys: list[_Polygon], x0: float, y0: float, bw: float, bh: float) -> list[list[float]]:
    """Scale unit-square polygons into the box and flatten to COCO's [x1, y1, x2, y2, ...]."""
    return [[round(v, 2) for x, y in poly for v in (x0 + x * bw, y0 + y * bh)] for poly in polys]


def _background(size: int, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    name = str(rng.choice(sorted(_BACKGROUNDS)))
    base = np.asarray(_BACKGROUNDS[name], dtype=np.float64)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    direction = rng.uniform(-1.0, 1.0, size=2)
    gradient = 18.0 * (direction[0] * (xx - 0.5) + direction[1] * (yy - 0.5))
    return name, base[None, None, :] + gradient[:, :, None]


def _draw_object(
    canvas_HW3: np.ndarray, look: _Look, box: tuple[float, float, float, float], rng: np.random.Generator
) -> list[list[float]]:
    """Paint one object into ``canvas_HW3`` (in place) and return its COCO polygons."""
    h, w = canvas_HW3.shape[:2]
    segmentation = _place(_shape(look.name), *box)
    mask_img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask_img)
    for flat in segmentation:
        draw.polygon(list(zip(flat[0::2], flat[1::2], strict=True)), fill=255)
    mask_HW = np.asarray(mask_img) > 0
    canvas_HW3[mask_HW] = _texture(look, h, w, rng)[mask_HW]
    return segmentation


def _random_box(
    rng: np.random.Generator, look: _Look, region: tuple[float, float, float, float], lo: float, hi: float
) -> tuple[float, float, float, float]:
    """A box with the look's aspect ratio, its long side lo..hi of the region's short side, inside the region."""
    rx, ry, rw, rh = region
    long_side = float(rng.uniform(lo, hi)) * min(rw, rh)
    bw, bh = (
        (long_side, long_side / look.aspect) if look.aspect >= 1 else (long_side * look.aspect, long_side)
    )
    x0 = rx + float(rng.uniform(0.0, rw - bw))
    y0 = ry + float(rng.uniform(0.0, rh - bh))
    return x0, y0, bw, bh


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


_ONE = (
    "{a_name} on {a_bg} background",
    "a photo of {a_name}",
    "{a_tex} {name} on {a_bg} background",
    "{a_col} {name} in the middle of the picture",
    "there is {a_name} in this picture",
    "a close-up of {a_col} {name}",
    "{a_tex} {col} {name}",
    "a simple drawing of {a_name}",
)
_TWO = (
    "{a_name} and {b_name}",
    "a photo of {a_name} next to {b_name}",
    "{b_name} beside {a_name} on {a_bg} background",
    "{a_tex} {name} and {b_col_name}",
    "two things on {a_bg} background: {a_name} and {b_name}",
    "a picture showing {a_col_name} and {b_tex_name}",
)
_EMPTY = (
    "an empty {bg} background",
    "a plain {bg} picture with nothing in it",
    "a blank {bg} image",
    "nothing but {a_bg} background",
    "a photo of {a_bg} wall with no objects",
    "{a_bg} surface, empty",
)


def _captions(looks: Sequence[_Look], bg: str, rng: np.random.Generator, n: int = 5) -> list[str]:
    """``n`` different captions that name every object in the image (or say that it is empty)."""
    fields: dict[str, str] = {"bg": bg, "a_bg": _article(bg)}
    if not looks:
        templates = _EMPTY
    else:
        a = looks[0]
        fields |= {
            "name": a.name,
            "col": a.colour_word,
            "a_name": _article(a.name),
            "a_tex": _article(a.texture_word),
            "a_col": _article(a.colour_word),
            "a_col_name": _article(f"{a.colour_word} {a.name}"),
        }
        templates = _ONE
        if len(looks) == 2:
            b = looks[1]
            fields |= {
                "b_name": _article(b.name),
                "b_col_name": _article(f"{b.colour_word} {b.name}"),
                "b_tex_name": _article(f"{b.texture_word} {b.name}"),
            }
            templates = _TWO
    picked = rng.choice(len(templates), size=n, replace=False)
    return [templates[int(i)].format(**fields) for i in picked]


def _plan(n_images: int, rng: np.random.Generator) -> list[tuple[str, ...]]:
    """Which categories each image holds: mostly one, ~15% two different ones, a few none."""
    n_empty = max(1, round(0.03 * n_images)) if n_images >= 8 else 0
    n_two = round(TWO_OBJECT_FRACTION * n_images) if n_images >= 8 else 0
    n_one = n_images - n_empty - n_two
    cats = list(DEMO_CATEGORIES)
    plan: list[tuple[str, ...]] = [(cats[i % len(cats)],) for i in range(n_one)]
    for _ in range(n_two):
        i, j = rng.choice(len(cats), size=2, replace=False)
        plan.append((cats[int(i)], cats[int(j)]))
    plan += [()] * n_empty
    order = rng.permutation(len(plan))
    return [plan[int(i)] for i in order]


#: Images per category in the real COCO val2017 (images holding at least one instance), for the six drawn
#: categories. person, cat and dog are pinned in FIELD_NOTES (counted in instances_val2017.json); car, chair and
#: pizza are the published val2017 per-category image counts as remembered (not re-counted here).
VAL2017_IMAGE_COUNTS: dict[str, int] = {
    "person": 2693,
    "car": 535,
    "cat": 184,
    "dog": 177,
    "pizza": 224,
    "chair": 580,
}
VAL2017_N_IMAGES = 5000


def plan_from_counts(
    n_images: int, counts: dict[str, int], rng: np.random.Generator, *, cooccurrence: float = 0.3
) -> list[tuple[str, ...]]:
    """Categories per image such that category ``c`` is in exactly ``counts[c]`` images (at most two per image).

    Categories are placed largest first; each image of a later category joins an image that holds exactly one
    other category with probability ``cooccurrence`` (as person appears with a third to a half of COCO's cats,
    dogs, cars, chairs and pizzas), else an empty image. Images left empty hold none of the drawn categories
    (in real COCO they hold other categories). Raises ``ValueError`` when the counts cannot fit.
    """
    unknown = sorted(set(counts) - set(DEMO_CATEGORIES))
    if unknown:
        raise ValueError(f"category counts for {unknown}: only {', '.join(DEMO_CATEGORIES)} can be drawn")
    if sum(counts.values()) > 2 * n_images:
        raise ValueError(f"category counts {counts} need more than two objects per image of {n_images}")
    plan: list[list[str]] = [[] for _ in range(n_images)]
    for cat in sorted(counts, key=lambda c: (-counts[c], c)):
        singles = [i for i, p in enumerate(plan) if len(p) == 1]
        empties = [i for i, p in enumerate(plan) if not p]
        n_join = min(len(singles), round(cooccurrence * counts[cat]) if singles and empties else counts[cat])
        n_join = max(n_join, counts[cat] - len(empties))
        if n_join > len(singles):
            raise ValueError(f"category counts {counts} do not fit in {n_images} images (at {cat!r})")
        picked = list(rng.choice(singles, size=n_join, replace=False)) if n_join else []
        picked += (
            list(rng.choice(empties, size=counts[cat] - n_join, replace=False))
            if counts[cat] > n_join
            else []
        )
        for i in picked:
            plan[int(i)].append(cat)
    return [tuple(sorted(p, key=DEMO_CATEGORIES.index)) for p in plan]


#: Image ids are ``8 * k + band``: the standard splits get their own residue, so their ids never collide.
_SPLIT_BAND = {"train2017": 0, "val2017": 1, "test2017": 2, "unlabeled2017": 3}


def _image_ids(split: str, n_images: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted, unique, COCO-like (< 10**6) image ids; disjoint between the standard COCO splits."""
    band = _SPLIT_BAND.get(split, 4 + zlib.crc32(split.encode()) % 4)
    if n_images > 125_000:
        raise ValueError(f"n_images={n_images} is more than a synthetic split can hold (125000)")
    return np.sort(rng.choice(125_000, size=n_images, replace=False)) * 8 + band


def _json_text(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n"


def make_synthetic_coco(
    root: str | os.PathLike,
    *,
    n_images: int = 96,
    seed: int = 0,
    image_size: int = 64,
    split: str = "val2017",
    category_image_counts: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Write a small synthetic COCO-2017-format split under ``root`` and return a summary of counts.

    Writes ``root/<split>/`` (JPEGs named by 12-digit image id) and ``root/annotations/instances_<split>.json``
    and ``captions_<split>.json``. Each of the three appears atomically (built under a temporary name, then
    renamed); the image folder is renamed first, so the annotation files are the completion marker. Other
    splits already under ``root`` are left alone, so ``train2017`` and ``val2017`` can be written side by side.

    ``category_image_counts`` (e.g. :data:`VAL2017_IMAGE_COUNTS` with ``n_images=5000``) fixes how many images
    hold each category (:func:`plan_from_counts`); by default the categories take turns (demo data).
    """
    _check_args(n_images, image_size, split)
    root = Path(root)
    rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
    cat_ids = {name: cid for cid, name, _ in COCO_CATEGORIES}

    image_ids = _image_ids(split, n_images, rng)
    if category_image_counts is None:
        plan = _plan(n_images, rng)
    else:
        plan = plan_from_counts(n_images, dict(category_image_counts), rng)
    images: list[dict[str, Any]] = []
    instances: list[dict[str, Any]] = []
    captions: list[dict[str, Any]] = []
    per_category = dict.fromkeys(DEMO_CATEGORIES, 0)

    with atomic_dir(root / split) as img_dir:
        for image_id, cats in zip(image_ids.tolist(), plan, strict=True):
            file_name = f"{image_id:012d}.jpg"
            bg_name, canvas_HW3 = _background(image_size, rng)
            for cat, box in zip(cats, _boxes(cats, image_size, rng), strict=True):
                ann_id = len(instances) + 1
                instances.append(_draw_instance(canvas_HW3, cat, cat_ids[cat], box, image_id, ann_id, rng))
                per_category[cat] += 1
            canvas_HW3 += rng.normal(0.0, 6.0, size=canvas_HW3.shape)
            pixels = np.clip(np.rint(canvas_HW3), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels, mode="RGB").save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
            (img_dir / file_name).write_bytes(buf.getvalue())
            images.append(_image_entry(split, file_name, image_id, image_size))
            for text in _captions([_LOOKS[c] for c in cats], bg_name, rng):
                captions.append({"caption": text, "id": len(captions) + 1, "image_id": image_id})

    _write_annotations(root / "annotations", split, images, instances, captions, _header(split, seed))
    summary = {
        "split": split,
        "images": len(images),
        "instances": len(instances),
        "captions": len(captions),
        "images_per_n_objects": {str(k): sum(len(p) == k for p in plan) for k in (0, 1, 2)},
        "instances_per_category": per_category,
    }
    log.info("wrote synthetic COCO %s under %s: %s", split, root, summary)
    return summary


def _header(split: str, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ``licenses`` and ``info`` blocks of both annotation files."""
    licenses = [
        {
            "id": 1,
            "name": "CC0 1.0 (synthetic demo data)",
            "url": "https://creativecommons.org/publicdomain/zero/1.0/",
        }
    ]
    info = {
        "contributor": "repshift (synthetic)",
        "date_created": "2017/09/01",
        "description": f"Synthetic COCO-format demo data ({split}, seed {seed}); not real COCO images",
        "url": "https://cocodataset.org",
        "version": "1.0",
        "year": 2017,
    }
    return licenses, info


def _boxes(cats, image_size: int, rng: np.random.Generator) -> list:
    """One box per object: two objects get one half each (left/right or top/bottom), one gets the canvas."""
    full = (0.0, 0.0, float(image_size), float(image_size))
    if len(cats) != 2:
        return [_random_box(rng, _LOOKS[c], full, 0.45, 0.85) for c in cats]
    half = image_size / 2
    if rng.random() < 0.5:
        regions = [(0.0, 0.0, half, float(image_size)), (half, 0.0, half, float(image_size))]
    else:
        regions = [(0.0, 0.0, float(image_size), half), (0.0, half, float(image_size), half)]
    return [_random_box(rng, _LOOKS[c], r, 0.8, 0.97) for c, r in zip(cats, regions, strict=True)]


def _draw_instance(canvas_HW3, cat: str, cat_id: int, box, image_id: int, ann_id: int, rng) -> dict[str, Any]:
    """Draw one object into the canvas; its instance annotation (area and bbox from the polygon's RLE)."""
    image_size = canvas_HW3.shape[0]
    segmentation = _draw_object(canvas_HW3, _LOOKS[cat], box, rng)
    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, image_size, image_size))
    return {
        "area": float(mask_utils.area(rle)),
        "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)],
        "category_id": cat_id,
        "id": ann_id,
        "image_id": image_id,
        "iscrowd": 0,
        "segmentation": segmentation,
    }


def _image_entry(split: str, file_name: str, image_id: int, image_size: int) -> dict[str, Any]:
    """The ``images`` entry of one synthetic image (COCO's keys)."""
    url = f"https://example.invalid/repshift-synthetic/{split}/{file_name}"
    return {
        "coco_url": url,
        "date_captured": f"2017-{1 + image_id % 12:02d}-{1 + image_id % 28:02d} 12:00:00",
        "file_name": file_name,
        "flickr_url": url,
        "height": image_size,
        "id": image_id,
        "license": 1,
        "width": image_size,
    }


def _check_args(n_images: int, image_size: int, split: str) -> None:
    """ValueError naming the argument when the image count, size or split name cannot be written."""
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    if image_size < 32:
        raise ValueError(
            f"image_size must be >= 32 pixels so that objects stay recognisable, got {image_size}"
        )
    if not split or "/" in split or split.startswith("."):
        raise ValueError(f"split must be a plain folder name such as 'val2017', got {split!r}")


def _write_annotations(ann_dir: Path, split: str, images, instances, captions, header) -> None:
    """``instances_<split>.json`` and ``captions_<split>.json`` (each atomically), in COCO's layout."""
    licenses, info = header
    categories = [{"id": cid, "name": name, "supercategory": sup} for cid, name, sup in COCO_CATEGORIES]
    write_text(
        ann_dir / f"instances_{split}.json",
        _json_text(
            {
                "annotations": instances,
                "categories": categories,
                "images": images,
                "info": info,
                "licenses": licenses,
            }
        ),
    )
    write_text(
        ann_dir / f"captions_{split}.json",
        _json_text({"annotations": captions, "images": images, "info": info, "licenses": licenses}),
    )
