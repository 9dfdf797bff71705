"""Probe datasets built from COCO: spec, manifest (the on-disk format), folds, and the one image loader.

A dataset is described by a :class:`DatasetSpec` (one entry of ``datasets:`` in ``config.yaml``) and
materialised as a *manifest*: a UTF-8 TSV with one row per example plus a JSON sidecar (same stem,
``.json``) holding the spec, seed, counts, skipped items and provenance. This module owns that format.

Manifest columns (``MANIFEST_COLUMNS``, in this order; ``pair_id`` only for ``paired`` datasets):

============  =====  ==========================================================================
example_id    str    unique: ``"397133"`` (image row), ``"397133-c2"`` (text row, caption index 2),
                     ``"397133-brightness-0.5"`` (attribute variant)
image_id      int    COCO image id
group         int    base image id; folds are grouped by it (no image on both sides of a split)
modality      str    ``text`` or ``image`` (attribute variants are ``image``)
file          str    image file name relative to ``image_dir`` (also on text rows, for traceability)
text          str    the caption for text rows, ``""`` for image rows
captions      str    all non-empty captions of the image, annotation-id order, joined by ``" ||| "``
label         int    0..K-1; ``label_names[label]`` in the sidecar
label_name    str    class name (binary: ``"not-<class>"`` / ``"<class>"``; attribute: ``"brightness-0.5"``)
transform     str    ``""`` or ``"<attribute>:<factor>"`` applied in memory by :func:`load_example_image`
fold          int    0..folds-1, StratifiedGroupKFold by ``group``, assigned once here
pair_id       int    paired datasets only: the image id shared by the text row and the image row
============  =====  ==========================================================================

Selection rules (all deterministic given ``seed``; candidate ids are sorted before sampling, so the
JSON order never matters; each class draws from its own seeded permutation of its sorted pool and takes
the first ``n_per_class`` usable images):

* class datasets (text/image/paired) consider only images with at least one instance annotation
  (skipped and counted as ``no_instances``); level ``category`` matches category names, level
  ``supercategory`` matches supercategory names (any category of it present).
* multi-class, ``exclusive: true``: an image counts only when exactly one target class is present
  (others skipped, counted as ``ambiguous_multiclass``). ``exclusive: false``: such an image gets the
  target class with the largest total instance area (ties: lowest label), counted as
  ``multiclass_by_area``.
* binary: exactly one class; label 1 = present, label 0 = absent (drawn from annotated images without it).
* attribute: ``n_base`` base images (any image, or images with any of ``classes`` if given), each
  emitted once per factor; label = index of the factor in ``factors``; all variants share ``group``.
  Saturation datasets skip achromatic bases (mean per-pixel max(R,G,B) - min(R,G,B) on a 128 px thumbnail
  below ``min_chroma``, default 8 of 255; counted as ``achromatic``): their variants would be identical
  images with different labels. Blur and rotation variants carry the model input size (``blur:1.5@224``,
  from ``input_size``, default 224): radii and angles are defined in model-input pixels.
* ``n_per_class`` / ``n_base`` counts *images*; ``caption: all`` yields one text row per caption.
* fewer usable images than requested is an error naming the class and the count, unless
  ``allow_fewer: true`` (then a warning, and the shortfall is recorded in the sidecar).

Bad input (every rule logs and is counted in the sidecar under ``skipped`` / ``load``):

* duplicate image, annotation or category ids in either JSON: :class:`CocoFormatError` naming the id.
* an image id listed in both JSONs with different file names: error naming the id.
* annotations pointing to unknown images or categories: skipped, counted.
* empty (whitespace-only) or null captions: that caption is skipped, counted (``empty_captions``).
* images without any non-empty caption: skipped for text/paired datasets (``no_captions``).
* captions are whitespace-normalised (runs of spaces/tabs/newlines become one space); non-ASCII text is
  kept as is and written as UTF-8.
* image modalities (image/paired/attribute; or any dataset with ``validate: true``): every selected image is
  checked by :func:`validate_images` (exists, non-empty, ``PIL.verify()``, reduced-size decode, which is
  what catches truncated JPEGs); bad ones are skipped, replaced by the next image of the permutation, and
  listed with their reason in the sidecar (``invalid_images``). ``validate: false`` turns this off; the
  loader then raises at extraction time.
* :func:`load_example_image` raises :class:`ImageLoadError` naming the file for missing/corrupt/truncated
  files; colour modes are converted to RGB by :func:`to_rgb` (rules in its docstring). EXIF orientation is
  ignored: pixels are used as stored, the frame in which COCO annotations are defined.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from repshift.data.images import (
    ATTRIBUTES,
    DEFAULT_INPUT_SIZE,
    DEFAULT_MIN_CHROMA,
    SIZED_ATTRIBUTES,
    _check_parameter,
    _fmt_number,
    format_transform,
    image_chroma,
    validate_images,
)
from repshift.formats.manifest import CAPTION_SEP, MANIFEST_COLUMNS, _counts, assign_folds, check_manifest
from repshift.formats.provenance import config_hash, provenance

logger = logging.getLogger(__name__)


MODALITIES = ("text", "image", "paired", "attribute")


LEVELS = ("category", "supercategory")


CAPTION_MODES = ("first", "all", "random")


_SLUG = re.compile(r"^[a-z0-9-]+$")


_MAX_EXAMPLES = 20  # ids listed per skip reason in the sidecar


class CocoFormatError(ValueError):
    """The COCO annotation JSON is malformed (duplicate ids, missing keys, inconsistent images)."""


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of ``config.yaml``; see the module docstring for the meaning of each field."""

    name: str
    modality: str
    classes: tuple[str, ...] = ()
    level: str = "category"
    binary: bool = False
    exclusive: bool = True
    n_per_class: int = 200
    allow_fewer: bool = False
    caption: str = "first"
    folds: int = 5
    validate: bool | None = None  # None: true for image modalities, false for text
    attribute: str | None = None
    factors: tuple[float, ...] | None = None
    n_base: int | None = None
    input_size: int | None = None  # blur/rotation: side of the model's square input (default 224)
    min_chroma: float | None = None  # saturation: bases with a lower mean chroma are skipped (default 8)

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> DatasetSpec:
        if d.get("source", "coco") != "coco":
            raise ValueError(f"dataset {name!r}: source must be coco here, got {d['source']!r}")
        d = {k: v for k, v in d.items() if k != "source"}
        allowed = [f.name for f in dataclasses.fields(cls) if f.name != "name"]
        for key in d:
            if key not in allowed:
                raise ValueError(
                    f"dataset {name!r}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})"
                )
        kw: dict[str, Any] = dict(d)
        if "classes" in kw:
            classes = kw["classes"]
            if isinstance(classes, str) or not isinstance(classes, Sequence):
                raise ValueError(f"dataset {name!r}: classes must be a list of names, got {classes!r}")
            kw["classes"] = tuple(classes)
        if kw.get("factors") is not None:
            factors = kw["factors"]
            if isinstance(factors, str) or not isinstance(factors, Sequence):
                raise ValueError(f"dataset {name!r}: factors must be a list of numbers, got {factors!r}")
            kw["factors"] = tuple(factors)
        return cls(name=name, **kw)

    def __post_init__(self) -> None:
        n = f"dataset {self.name!r}"
        if not isinstance(self.name, str) or not _SLUG.match(self.name):
            raise ValueError(f"{n}: name must match {_SLUG.pattern}")
        if self.modality not in MODALITIES:
            raise ValueError(f"{n}: modality {self.modality!r} is not one of {MODALITIES}")
        if self.level not in LEVELS:
            raise ValueError(f"{n}: level {self.level!r} is not one of {LEVELS}")
        if self.caption not in CAPTION_MODES:
            raise ValueError(f"{n}: caption {self.caption!r} is not one of {CAPTION_MODES}")
        for key in ("binary", "exclusive", "allow_fewer"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{n}: {key} must be true or false, got {getattr(self, key)!r}")
        if self.validate is not None and not isinstance(self.validate, bool):
            raise ValueError(f"{n}: validate must be true or false, got {self.validate!r}")
        for key, low in (("n_per_class", 1), ("folds", 2)):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"{n}: {key} must be an integer >= {low}, got {v!r}")
        if not all(isinstance(c, str) and c for c in self.classes):
            raise ValueError(f"{n}: classes must be non-empty strings, got {list(self.classes)}")
        dup = [c for c, k in Counter(self.classes).items() if k > 1]
        if dup:
            raise ValueError(f"{n}: class {dup[0]!r} listed twice")

        if self.modality == "attribute":
            if self.attribute not in ATTRIBUTES:
                raise ValueError(f"{n}: attribute must be one of {ATTRIBUTES}, got {self.attribute!r}")
            if self.factors is None or len(self.factors) < 2:
                raise ValueError(f"{n}: attribute datasets need at least two factors, got {self.factors!r}")
            for f in self.factors:
                if not isinstance(f, int | float) or isinstance(f, bool) or not math.isfinite(f):
                    raise ValueError(f"{n}: factor {f!r} is not a finite number")
                _check_parameter(self.attribute, float(f), where=n)
            labels = [_fmt_number(f) for f in self.factors]
            dup = [x for x, k in Counter(labels).items() if k > 1]
            if dup:
                raise ValueError(f"{n}: factor {dup[0]} listed twice")
            n_base = 200 if self.n_base is None else self.n_base
            if not isinstance(n_base, int) or isinstance(n_base, bool) or n_base < 1:
                raise ValueError(f"{n}: n_base must be an integer >= 1, got {self.n_base!r}")
            object.__setattr__(self, "n_base", n_base)
            self._check_attribute_keys(n)
            object.__setattr__(self, "factors", tuple(float(f) for f in self.factors))
            if self.binary:
                raise ValueError(f"{n}: binary does not apply to attribute datasets (labels are factors)")
        else:
            for key in ("attribute", "factors", "n_base", "input_size", "min_chroma"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{n}: {key} only applies to modality: attribute (got {self.modality})")
            if self.binary and len(self.classes) != 1:
                raise ValueError(f"{n}: binary datasets take exactly one class, got {list(self.classes)}")
            if not self.binary and len(self.classes) < 2:
                raise ValueError(
                    f"{n}: multi-class datasets need at least two classes, got {list(self.classes)} "
                    "(use binary: true for one class)"
                )
            if self.modality == "paired" and self.caption == "all":
                raise ValueError(
                    f"{n}: caption: all is not supported for paired datasets (one text row per image row); "
                    "use first or random"
                )

    def _check_attribute_keys(self, n: str) -> None:
        """input_size (blur, rotation) and min_chroma (saturation): check, or fill their defaults."""
        if self.attribute in SIZED_ATTRIBUTES:
            size = DEFAULT_INPUT_SIZE if self.input_size is None else self.input_size
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise ValueError(
                    f"{n}: input_size must be an integer >= 1 (model input pixels), got {size!r}"
                )
            object.__setattr__(self, "input_size", size)
        elif self.input_size is not None:
            raise ValueError(f"{n}: input_size only applies to attributes {SIZED_ATTRIBUTES}")
        if self.attribute == "saturation":
            lim = DEFAULT_MIN_CHROMA if self.min_chroma is None else self.min_chroma
            if not isinstance(lim, int | float) or isinstance(lim, bool) or not 0 <= lim <= 255:
                raise ValueError(f"{n}: min_chroma must be a number in 0..255, got {lim!r}")
            object.__setattr__(self, "min_chroma", float(lim))
        elif self.min_chroma is not None:
            raise ValueError(f"{n}: min_chroma only applies to attribute: saturation")

    @property
    def check_images(self) -> bool:
        """Whether the builder validates image files (default: for every modality that reads pixels)."""
        return self.validate if self.validate is not None else self.modality != "text"

    @property
    def label_names(self) -> list[str]:
        if self.modality == "attribute":
            return [f"{self.attribute}-{_fmt_number(f)}" for f in self.factors or ()]
        if self.binary:
            return [f"not-{self.classes[0]}", self.classes[0]]
        return list(self.classes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        d["factors"] = None if self.factors is None else list(self.factors)
        return d


@dataclass(frozen=True)
class CocoIndex:
    """What the dataset builder needs from one COCO split, read once (no image is decoded)."""

    split: str
    annotations_dir: Path
    files: Mapping[int, str]  # image id -> file name
    categories: Mapping[int, tuple[str, str]]  # category id -> (name, supercategory)
    cat_area: Mapping[int, Mapping[int, float]]  # image id -> {category id: total instance area}
    captions: Mapping[int, tuple[tuple[int, str], ...]]  # image id -> ((ann id, text), ...) non-empty, by id
    load_stats: Mapping[str, int] = field(default_factory=dict)
    instances_api: Any = field(default=None, repr=False, compare=False)  # pycocotools.coco.COCO
    captions_api: Any = field(default=None, repr=False, compare=False)


def _read_coco(path: Path, required: Sequence[str]) -> Any:
    from pycocotools.coco import COCO

    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):  # pycocotools prints progress; keep it in the log
            api = COCO(str(path))
    except json.JSONDecodeError as exc:
        raise CocoFormatError(f"{path}: not valid JSON ({exc})") from exc
    except (KeyError, TypeError, AssertionError) as exc:
        raise CocoFormatError(f"{path}: malformed COCO JSON (missing/invalid field {exc})") from exc
    for line in buf.getvalue().splitlines():
        logger.debug("pycocotools: %s", line)
    if not isinstance(api.dataset, dict):
        raise CocoFormatError(f"{path}: top level must be a JSON object")
    for key in required:
        if not isinstance(api.dataset.get(key), list):
            raise CocoFormatError(f"{path}: missing list {key!r}")
    for key, what in (("images", "image"), ("annotations", "annotation"), ("categories", "category")):
        if key not in required:
            continue
        ids = []
        for item in api.dataset[key]:
            i = item.get("id") if isinstance(item, dict) else None
            if not isinstance(i, int) or isinstance(i, bool) or i < 0:
                raise CocoFormatError(f"{path}: {what} without a non-negative integer id: {item!r:.200}")
            ids.append(i)
        dup = sorted(i for i, k in Counter(ids).items() if k > 1)
        if dup:
            more = f" (and {len(dup) - 1} more)" if len(dup) > 1 else ""
            raise CocoFormatError(f"{path}: duplicate {what} id {dup[0]}{more}")
    return api


def load_coco(annotations_dir: str | os.PathLike, split: str = "val2017") -> CocoIndex:
    """Read ``instances_{split}.json`` and ``captions_{split}.json`` once (pycocotools); decode no image."""
    root = Path(annotations_dir)
    inst = _read_coco(root / f"instances_{split}.json", ("images", "annotations", "categories"))
    caps = _read_coco(root / f"captions_{split}.json", ("images", "annotations"))
    stats: Counter[str] = Counter()
    files = _image_files(inst, caps, split, stats)
    categories = {
        c["id"]: (str(c.get("name", "")), str(c.get("supercategory", ""))) for c in inst.dataset["categories"]
    }
    cat_area = _instance_areas(inst, files, categories, stats)
    captions = _captions(caps, files, split, stats)
    stats["images_without_instances"] = sum(1 for i in files if i not in cat_area)
    stats["images_without_captions"] = sum(1 for i in files if i not in captions)
    for key in sorted(stats):
        if stats[key] and key != "images":
            logger.info("load_coco %s: %s = %d", split, key, stats[key])
    logger.info(
        "load_coco %s: %d images, %d categories, %d instance and %d caption annotations",
        split,
        len(files),
        len(categories),
        len(inst.dataset["annotations"]),
        len(caps.dataset["annotations"]),
    )
    return CocoIndex(
        split=split,
        annotations_dir=root,
        files=dict(files),
        categories=categories,
        cat_area={k: dict(v) for k, v in cat_area.items()},
        captions={k: tuple(v) for k, v in captions.items()},
        load_stats=dict(stats),
        instances_api=inst,
        captions_api=caps,
    )


def _image_files(inst, caps, split: str, stats: Counter) -> dict[int, str]:
    """image id -> file name over both annotation files, which must agree; counts images only in one file."""
    files: dict[int, str] = {}
    for src, api in (("instances", inst), ("captions", caps)):
        for img in api.dataset["images"]:
            fname = img.get("file_name")
            if not isinstance(fname, str) or not fname:
                raise CocoFormatError(f"{src}_{split}.json: image {img['id']} has no file_name")
            if files.setdefault(img["id"], fname) != fname:
                raise CocoFormatError(
                    f"image id {img['id']} has file {files[img['id']]!r} in instances_{split}.json "
                    f"but {fname!r} in captions_{split}.json"
                )
    inst_ids = {img["id"] for img in inst.dataset["images"]}
    cap_ids = {img["id"] for img in caps.dataset["images"]}
    stats["images"] = len(files)
    stats["images_only_in_instances"] = len(inst_ids - cap_ids)
    stats["images_only_in_captions"] = len(cap_ids - inst_ids)
    return files


def _instance_areas(inst, files, categories, stats: Counter) -> dict[int, dict[int, float]]:
    """image id -> {category id: summed instance area} (the bbox area where an annotation has no area)."""
    cat_area: dict[int, dict[int, float]] = defaultdict(dict)
    for ann in inst.dataset["annotations"]:
        img_id, cat_id = ann.get("image_id"), ann.get("category_id")
        if img_id not in files:
            stats["instances_unknown_image"] += 1
            continue
        if cat_id not in categories:
            stats["instances_unknown_category"] += 1
            continue
        area = ann.get("area")
        if not isinstance(area, int | float) or isinstance(area, bool):
            bbox = ann.get("bbox") or [0, 0, 0, 0]
            area = float(bbox[2]) * float(bbox[3]) if len(bbox) == 4 else 0.0
        per = cat_area[img_id]
        per[cat_id] = per.get(cat_id, 0.0) + float(area)
    return cat_area


def _captions(caps, files, split: str, stats: Counter) -> dict[int, list[tuple[int, str]]]:
    """image id -> [(annotation id, caption with whitespace collapsed)] in annotation-id order; empty ones
    and those of unknown images are counted, not kept."""
    captions: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for ann in sorted(caps.dataset["annotations"], key=lambda a: a["id"]):
        img_id, text = ann.get("image_id"), ann.get("caption")
        if img_id not in files:
            stats["captions_unknown_image"] += 1
            continue
        if text is not None and not isinstance(text, str):
            raise CocoFormatError(f"captions_{split}.json: caption annotation {ann['id']} is not a string")
        text = " ".join((text or "").split())
        if not text:
            stats["empty_captions"] += 1
            continue
        captions[img_id].append((ann["id"], text))
    return captions


class _Skips:
    """Counts (and a few example ids) of everything skipped, by reason."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[Any]] = defaultdict(list)
        self.notes: Counter[str] = Counter()  # not skipped, but worth knowing (e.g. multiclass_by_area)

    def add(self, reason: str, item: Any) -> None:
        self.counts[reason] += 1
        if len(self.examples[reason]) < _MAX_EXAMPLES:
            self.examples[reason].append(item)


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _class_members(spec: DatasetSpec, coco: CocoIndex) -> dict[str, set[int]]:
    """Category ids making up each class of the spec, checking that every class exists."""
    idx = 0 if spec.level == "category" else 1
    members: dict[str, set[int]] = {}
    available = sorted({v[idx] for v in coco.categories.values()})
    for cls in spec.classes:
        ids = {cid for cid, v in coco.categories.items() if v[idx] == cls}
        if not ids:
            raise ValueError(
                f"dataset {spec.name!r}: no COCO {spec.level} named {cls!r} (available: {', '.join(available)})"
            )
        members[cls] = ids
    return members


def _class_pools(spec: DatasetSpec, coco: CocoIndex, skips: _Skips) -> dict[int, list[int]]:
    """label -> sorted candidate image ids, disjoint across labels."""
    need_captions = spec.modality in ("text", "paired")
    members = _class_members(spec, coco)
    pools: dict[int, list[int]] = defaultdict(list)

    if spec.modality == "attribute":
        wanted = set().union(*members.values()) if members else None
        base = []
        for img_id in sorted(coco.files):
            if wanted is not None:
                if img_id not in coco.cat_area:
                    skips.add("no_instances", img_id)
                    continue
                if not wanted & coco.cat_area[img_id].keys():
                    continue
            base.append(img_id)
        return {0: base}

    for img_id in sorted(coco.files):
        areas = coco.cat_area.get(img_id)
        if not areas:
            skips.add("no_instances", img_id)
            continue
        present = {
            label: sum(a for cid, a in areas.items() if cid in members[cls])
            for label, cls in enumerate(spec.classes)
            if members[cls] & areas.keys()
        }
        if spec.binary:
            label = 1 if present else 0
        elif not present:
            continue
        elif len(present) == 1:
            label = next(iter(present))
        elif spec.exclusive:
            skips.add("ambiguous_multiclass", img_id)
            continue
        else:
            label = max(sorted(present), key=lambda k: present[k])  # largest area, ties: lowest label
            skips.notes["multiclass_by_area"] += 1
        if need_captions and img_id not in coco.captions:
            skips.add("no_captions", img_id)
            continue
        pools[label].append(img_id)
    return pools


_ACHROMATIC = "achromatic"


def _achromatic(spec: DatasetSpec, coco: CocoIndex, ids: Sequence[int], image_dir: Path) -> dict[int, str]:
    """Saturation bases whose mean chroma is below ``spec.min_chroma`` (grey photos, also when stored as RGB):
    their saturation variants are the same image under different labels."""
    out = {}
    for i in ids:
        chroma = image_chroma(image_dir / coco.files[i])
        if chroma < float(spec.min_chroma or 0.0):
            out[i] = f"{_ACHROMATIC}: mean chroma {chroma:.2f} < min_chroma {spec.min_chroma:g}"
    return out


MIN_PER_CLASS = 2  # a class needs two images to appear in both a training and a test fold


def check_class_size(
    dataset: str,
    source: str,
    what: str,
    *,
    usable: int,
    wanted: int,
    allow_fewer: bool,
    detail: str = "",
    size_key: str = "n_per_class",
) -> None:
    """Raise ``ValueError`` when a class of ``dataset`` has fewer usable images than asked (or, with
    ``allow_fewer``, fewer than :data:`MIN_PER_CLASS`); otherwise log the shortfall as a warning."""
    msg = (
        f"dataset {dataset!r}: {source} has only {usable} usable {what}"
        f"{f' ({detail})' if detail else ''}, {wanted} asked (datasets.{dataset}.{size_key})"
    )
    if allow_fewer and usable >= MIN_PER_CLASS:
        logger.warning("%s; continuing (allow_fewer: true)", msg)
        return
    if allow_fewer:
        raise ValueError(
            f"{msg}: even with allow_fewer: true a class needs at least {MIN_PER_CLASS} images (one per side "
            "of a train/test split); drop the class, or use another split"
        )
    raise ValueError(
        f"{msg}. Options: lower datasets.{dataset}.{size_key} to at most {usable}; set "
        f"datasets.{dataset}.allow_fewer: true (keeps the {usable}; classes become unbalanced); or use another "
        "split (coco.split: train2017, or the CIFAR-100 train split)"
    )


def _take(
    pool: Sequence[int],
    n: int,
    rng: np.random.Generator,
    check: Callable[[Sequence[int]], dict[int, str]] | None,
) -> tuple[list[int], dict[int, str]]:
    """First ``n`` usable ids of a seeded permutation of ``pool``; unusable ones are replaced by the next."""
    order = [pool[i] for i in rng.permutation(len(pool))]
    chosen: list[int] = []
    bad: dict[int, str] = {}
    pos = 0
    while len(chosen) < n and pos < len(order):
        batch = order[pos : pos + n - len(chosen)]
        pos += len(batch)
        problems = check(batch) if check is not None else {}
        bad.update(problems)
        chosen.extend(i for i in batch if i not in problems)
    return chosen, bad


def _record_skipped(
    spec: DatasetSpec, coco: CocoIndex, bad: Mapping[int, str], skips: _Skips, invalid: list[dict[str, str]]
) -> None:
    """Count (and log) the images a class draw passed over: achromatic saturation bases, invalid files."""
    for img_id, reason in sorted(bad.items()):
        if reason.startswith(_ACHROMATIC):
            skips.add("achromatic", img_id)
            logger.info("dataset %s: skipping base image %s: %s", spec.name, coco.files[img_id], reason)
            continue
        skips.add("invalid_image", img_id)
        invalid.append({"image_id": img_id, "file": coco.files[img_id], "reason": reason})
        logger.warning("dataset %s: skipping image %s: %s", spec.name, coco.files[img_id], reason)


def build_manifest(
    spec: DatasetSpec, coco: CocoIndex, *, image_dir: str | os.PathLike, seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Select, balance, label and fold one dataset; return the manifest rows and the sidecar metadata."""
    image_dir = Path(image_dir)
    skips = _Skips()
    label_names = spec.label_names
    pools = _class_pools(spec, coco, skips)

    def check(ids: Sequence[int]) -> dict[int, str]:
        frame = pd.DataFrame({"file": [coco.files[i] for i in ids]})
        problems = validate_images(frame, image_dir) if spec.check_images else {}
        bad = {i: problems[coco.files[i]] for i in ids if coco.files[i] in problems}
        if spec.attribute == "saturation":
            bad |= _achromatic(spec, coco, [i for i in ids if i not in bad], image_dir)
        return bad

    n_wanted = spec.n_base if spec.modality == "attribute" else spec.n_per_class
    pool_labels = [0] if spec.modality == "attribute" else list(range(len(label_names)))
    pool_names = ["base"] if spec.modality == "attribute" else label_names
    selected: dict[int, list[int]] = {}
    invalid: list[dict[str, str]] = []
    shortfall: dict[str, int] = {}
    for label, lname in zip(pool_labels, pool_names, strict=True):
        pool = pools.get(label, [])
        rng = np.random.default_rng([seed, _stable_int(lname)])
        needs_check = spec.check_images or spec.attribute == "saturation"
        chosen, bad = _take(pool, n_wanted, rng, check if needs_check else None)
        _record_skipped(spec, coco, bad, skips, invalid)
        if len(chosen) < n_wanted:
            what = "base images" if spec.modality == "attribute" else f"images of class {lname!r}"
            n_grey = sum(r.startswith(_ACHROMATIC) for r in bad.values())
            check_class_size(
                spec.name,
                f"COCO {coco.split}",
                what,
                usable=len(chosen),
                wanted=n_wanted,
                allow_fewer=spec.allow_fewer,
                detail=f"{len(pool)} candidates, {len(bad) - n_grey} invalid files"
                + (f", {n_grey} achromatic" if n_grey else ""),
                size_key="n_base" if spec.modality == "attribute" else "n_per_class",
            )
            shortfall[lname] = n_wanted - len(chosen)
        selected[label] = sorted(chosen)

    rows = _rows(spec, coco, selected, seed)
    df = pd.DataFrame(rows)
    if df.empty:
        raise ValueError(f"dataset {spec.name!r}: no examples selected")
    df = df.sort_values(["label", "group", "modality", "_sub"], kind="stable").reset_index(drop=True)
    df = df.drop(columns="_sub")
    df["fold"] = assign_folds(df["label"].to_numpy(), df["group"].to_numpy(), n_folds=spec.folds, seed=seed)
    df = df[list(MANIFEST_COLUMNS) + (["pair_id"] if spec.modality == "paired" else [])]
    check_manifest(df)

    for reason, count in sorted(skips.counts.items()):
        logger.info("dataset %s: skipped %d (%s)", spec.name, count, reason)
    for note, count in sorted(skips.notes.items()):
        logger.info("dataset %s: %s = %d", spec.name, note, count)
    meta = {
        "dataset": spec.name,
        "spec": spec.to_dict(),
        "seed": seed,
        "config_hash": config_hash(spec.to_dict()),
        "split": coco.split,
        "image_dir": str(image_dir),
        "label_names": label_names,
        "n_rows": len(df),
        "counts": _counts(df, label_names),
        "shortfall": shortfall,
        "skipped": dict(sorted(skips.counts.items())),
        "skipped_examples": {k: v for k, v in sorted(skips.examples.items())},
        "notes": dict(sorted(skips.notes.items())),
        "invalid_images": invalid,
        "load": dict(coco.load_stats),
        "provenance": provenance({"spec": spec.to_dict(), "seed": seed}),
    }
    logger.info("dataset %s: %d rows, %s", spec.name, len(df), meta["counts"]["per_class"])
    return df, meta


def _rows(spec: DatasetSpec, coco: CocoIndex, selected: Mapping[int, list[int]], seed: int) -> list[dict]:
    rows: list[dict[str, Any]] = []
    label_names = spec.label_names
    for label, ids in selected.items():
        for img_id in ids:
            caps = coco.captions.get(img_id, ())
            base = {
                "image_id": img_id,
                "group": img_id,
                "file": coco.files[img_id],
                "captions": CAPTION_SEP.join(t for _, t in caps),
            }
            if spec.modality == "attribute":
                for k, factor in enumerate(spec.factors or ()):
                    rows.append(
                        base
                        | {
                            "example_id": f"{img_id}-{label_names[k]}",
                            "modality": "image",
                            "text": "",
                            "label": k,
                            "label_name": label_names[k],
                            "transform": format_transform(spec.attribute, factor, spec.input_size),
                            "_sub": k,
                        }
                    )
                continue
            common = base | {"label": label, "label_name": label_names[label], "transform": ""}
            if spec.modality == "paired":
                common["pair_id"] = img_id
            if spec.modality in ("image", "paired"):
                rows.append(common | {"example_id": str(img_id), "modality": "image", "text": "", "_sub": 0})
            if spec.modality in ("text", "paired"):
                if spec.caption == "all":
                    picks = list(range(len(caps)))
                elif spec.caption == "first":
                    picks = [0]
                else:
                    picks = [int(np.random.default_rng([seed, img_id]).integers(len(caps)))]
                for k in picks:
                    rows.append(
                        common
                        | {"example_id": f"{img_id}-c{k}", "modality": "text", "text": caps[k][1], "_sub": k}
                    )
    return rows
