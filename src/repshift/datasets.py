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
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from repshift.atomic import atomic_path, write_json
from repshift.provenance import config_hash, provenance

logger = logging.getLogger(__name__)

MODALITIES = ("text", "image", "paired", "attribute")
LEVELS = ("category", "supercategory")
CAPTION_MODES = ("first", "all", "random")
ATTRIBUTES = ("brightness", "redness", "saturation", "contrast", "blur", "rotation")
CAPTION_SEP = " ||| "
MANIFEST_COLUMNS = (
    "example_id",
    "image_id",
    "group",
    "modality",
    "file",
    "text",
    "captions",
    "label",
    "label_name",
    "transform",
    "fold",
)
_INT_COLUMNS = ("image_id", "group", "label", "fold", "pair_id")
_SLUG = re.compile(r"^[a-z0-9-]+$")
_MAX_EXAMPLES = 20  # ids listed per skip reason in the sidecar


class CocoFormatError(ValueError):
    """The COCO annotation JSON is malformed (duplicate ids, missing keys, inconsistent images)."""


class ImageLoadError(OSError):
    """An image file is missing, unreadable, truncated or in a mode that cannot become RGB."""


# --------------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------------


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
            object.__setattr__(self, "factors", tuple(float(f) for f in self.factors))
            if self.binary:
                raise ValueError(f"{n}: binary does not apply to attribute datasets (labels are factors)")
        else:
            for key in ("attribute", "factors", "n_base"):
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


def _fmt_number(x: float) -> str:
    """Shortest exact text for a factor: 0.5 -> "0.5", 2.0 -> "2", -15.0 -> "-15"."""
    s = repr(float(x))
    return s[:-2] if s.endswith(".0") else s


# --------------------------------------------------------------------------------------------------
# COCO index
# --------------------------------------------------------------------------------------------------


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

    categories: dict[int, tuple[str, str]] = {}
    for c in inst.dataset["categories"]:
        categories[c["id"]] = (str(c.get("name", "")), str(c.get("supercategory", "")))

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


# --------------------------------------------------------------------------------------------------
# Manifest building
# --------------------------------------------------------------------------------------------------


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
        problems = validate_images(frame, image_dir)
        return {i: problems[coco.files[i]] for i in ids if coco.files[i] in problems}

    n_wanted = spec.n_base if spec.modality == "attribute" else spec.n_per_class
    pool_labels = [0] if spec.modality == "attribute" else list(range(len(label_names)))
    pool_names = ["base"] if spec.modality == "attribute" else label_names
    selected: dict[int, list[int]] = {}
    invalid: list[dict[str, str]] = []
    shortfall: dict[str, int] = {}
    for label, lname in zip(pool_labels, pool_names, strict=True):
        pool = pools.get(label, [])
        rng = np.random.default_rng([seed, _stable_int(lname)])
        chosen, bad = _take(pool, n_wanted, rng, check if spec.check_images else None)
        for img_id, reason in sorted(bad.items()):
            skips.add("invalid_image", img_id)
            invalid.append({"image_id": img_id, "file": coco.files[img_id], "reason": reason})
            logger.warning("dataset %s: skipping image %s: %s", spec.name, coco.files[img_id], reason)
        if len(chosen) < n_wanted:
            what = "base images" if spec.modality == "attribute" else f"images of class {lname!r}"
            msg = (
                f"dataset {spec.name!r}: only {len(chosen)} usable {what} ({len(pool)} candidates, "
                f"{len(bad)} invalid files), {n_wanted} requested"
            )
            if not spec.allow_fewer:
                raise ValueError(msg + "; lower n_per_class/n_base or set allow_fewer: true")
            logger.warning("%s; continuing (allow_fewer: true)", msg)
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
                            "transform": f"{spec.attribute}:{_fmt_number(factor)}",
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


def _counts(df: pd.DataFrame, label_names: Sequence[str]) -> dict[str, Any]:
    per_class = {
        name: {
            "rows": int((df["label"] == k).sum()),
            "images": int(df.loc[df["label"] == k, "group"].nunique()),
        }
        for k, name in enumerate(label_names)
    }
    per_fold = {
        str(f): {
            name: int(((df["fold"] == f) & (df["label"] == k)).sum()) for k, name in enumerate(label_names)
        }
        for f in sorted(df["fold"].unique())
    }
    per_modality = {str(m): int(c) for m, c in df["modality"].value_counts().sort_index().items()}
    return {"per_class": per_class, "per_fold": per_fold, "per_modality": per_modality}


def assign_folds(labels_N: Sequence[int], groups_N: Sequence[int], *, n_folds: int, seed: int) -> np.ndarray:
    """Fold index per row: StratifiedGroupKFold(shuffle, random_state=seed) on ``groups_N``.

    Deterministic, and independent of row order (sklearn works on sorted unique groups and labels).
    Every group lands in exactly one fold.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels_N = np.asarray(labels_N)
    groups_N = np.asarray(groups_N)
    if labels_N.shape != groups_N.shape or labels_N.ndim != 1:
        raise ValueError(f"labels {labels_N.shape} and groups {groups_N.shape} must be 1-D of equal length")
    n_groups = len(np.unique(groups_N))
    if n_groups < n_folds:
        raise ValueError(f"{n_folds} folds requested but only {n_groups} groups (base images); lower folds")
    counts = {int(lab): len(np.unique(groups_N[labels_N == lab])) for lab in np.unique(labels_N)}
    if min(counts.values()) < n_folds:
        logger.warning("fewer groups than folds for some labels (groups per label: %s)", counts)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds_N = np.full(len(labels_N), -1, dtype=np.int64)
    for fold, (_, test_idx) in enumerate(splitter.split(np.zeros(len(labels_N)), labels_N, groups_N)):
        folds_N[test_idx] = fold
    assert (folds_N >= 0).all()
    return folds_N


def check_manifest(df: pd.DataFrame) -> None:
    """Invariants every manifest satisfies; raises ValueError naming the first violation."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}")
    dup = df.loc[df["example_id"].duplicated(), "example_id"]
    if len(dup):
        raise ValueError(f"manifest has duplicate example_id {dup.iloc[0]!r}")
    leaks = df.groupby("group")["fold"].nunique()
    if (leaks > 1).any():
        raise ValueError(f"group {leaks[leaks > 1].index[0]} appears in more than one fold")
    bad_mod = set(df["modality"]) - {"text", "image"}
    if bad_mod:
        raise ValueError(f"manifest modality must be text or image, got {sorted(bad_mod)}")
    names = df.groupby("label")["label_name"].nunique()
    if (names > 1).any():
        raise ValueError(f"label {names[names > 1].index[0]} has several label_names")


# --------------------------------------------------------------------------------------------------
# Manifest I/O
# --------------------------------------------------------------------------------------------------


def sidecar_path(out_tsv: str | os.PathLike) -> Path:
    return Path(out_tsv).with_suffix(".json")


def write_manifest(df: pd.DataFrame, meta: Mapping[str, Any], out_tsv: str | os.PathLike) -> None:
    """Write the TSV (UTF-8, tab-separated, header) and its JSON sidecar, each atomically."""
    check_manifest(df)
    out_tsv = Path(out_tsv)
    write_json(sidecar_path(out_tsv), dict(meta) | {"columns": list(df.columns)})
    with atomic_path(out_tsv) as tmp:
        df.to_csv(tmp, sep="\t", index=False, encoding="utf-8", lineterminator="\n")
    logger.info("wrote %s (%d rows) and %s", out_tsv, len(df), sidecar_path(out_tsv).name)


def read_manifest(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a manifest TSV and its sidecar; text stays text (no NaN for "" or "NA"), ids stay ints."""
    path = Path(path)
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"manifest sidecar not found: {side} (written next to {path.name})")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
    for col in _INT_COLUMNS:
        if col in df.columns:
            df[col] = df[col].astype(np.int64)
    meta = json.loads(side.read_text(encoding="utf-8"))
    check_manifest(df)
    return df, meta


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------------

_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, as PIL's convert("L")


def _check_parameter(name: str, value: float, *, where: str = "transform") -> None:
    if not math.isfinite(value):
        raise ValueError(f"{where}: {name} parameter must be finite, got {value}")
    if name != "rotation" and value < 0:
        raise ValueError(f"{where}: {name} parameter must be >= 0, got {_fmt_number(value)}")


def parse_transform(transform: str) -> tuple[str, float] | None:
    """``"brightness:0.5"`` -> ``("brightness", 0.5)``; ``""`` -> None. Raises ValueError naming the string."""
    if transform == "":
        return None
    name, sep, value = transform.partition(":")
    if not sep or name not in ATTRIBUTES:
        raise ValueError(f"bad transform {transform!r}: expected '<name>:<number>' with name in {ATTRIBUTES}")
    try:
        x = float(value)
    except ValueError as exc:
        raise ValueError(f"bad transform {transform!r}: {value!r} is not a number") from exc
    _check_parameter(name, x, where=f"transform {transform!r}")
    return name, x


def _to_float(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64)


def _to_image(arr_HWC: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(arr_HWC), 0, 255).astype(np.uint8), mode="RGB")


def apply_transform(img: Image.Image, transform: str) -> Image.Image:
    """Apply one named transform to an RGB image, in memory; ``""`` returns an exact copy.

    * ``brightness:f``  every channel multiplied by f (rounded, clipped to 0..255)
    * ``redness:f``     red channel multiplied by f; green and blue untouched
    * ``saturation:f``  blend with the per-pixel luma (0.299R+0.587G+0.114B): luma + f*(x-luma)
    * ``contrast:f``    blend with the image's mean luma: mean + f*(x-mean)
    * ``blur:r``        Gaussian blur of radius r pixels (PIL GaussianBlur)
    * ``rotation:d``    rotate d degrees counter-clockwise about the centre, same size, bicubic, black corners
    """
    if img.mode != "RGB":
        raise ValueError(f"apply_transform expects an RGB image, got mode {img.mode} (use to_rgb first)")
    parsed = parse_transform(transform)
    if parsed is None:
        return img.copy()
    name, x = parsed
    if name == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=x))
    if name == "rotation":
        return img.rotate(x, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=(0, 0, 0))
    arr = _to_float(img)
    if name == "brightness":
        out = arr * x
    elif name == "redness":
        out = arr.copy()
        out[..., 0] *= x
    elif name == "saturation":
        luma = (arr @ _LUMA)[..., None]
        out = luma + x * (arr - luma)
    else:  # contrast
        mean = float((arr @ _LUMA).mean())
        out = mean + x * (arr - mean)
    return _to_image(out)


# --------------------------------------------------------------------------------------------------
# Contact sheet
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# One call for the rule script
# --------------------------------------------------------------------------------------------------


SOURCES = ("coco", "cifar100", "prompts")


def spec_from_config(name: str, d: Mapping[str, Any]) -> Any:
    """The typed spec of one ``datasets:`` entry, by its ``source`` (default coco): a :class:`DatasetSpec`,
    :class:`repshift.cifar.CifarSpec` or :class:`repshift.prompts.PromptSpec`. Raises ValueError naming the
    dataset and the key for anything that does not fit that source."""
    source = d.get("source", "coco")
    if source == "cifar100":
        from repshift.cifar import CifarSpec

        return CifarSpec.from_dict(name, d)
    if source == "prompts":
        from repshift.prompts import PromptSpec

        return PromptSpec.from_dict(name, d)
    if source != "coco":
        raise ValueError(f"dataset {name!r}: source {source!r} is not one of {SOURCES}")
    return DatasetSpec.from_dict(name, d)


def build_dataset(
    name: str,
    spec: Mapping[str, Any] | DatasetSpec,
    *,
    annotations_dir: str | os.PathLike,
    image_dir: str | os.PathLike,
    out_tsv: str | os.PathLike,
    seed: int,
    split: str = "val2017",
    contact_png: str | os.PathLike | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """load_coco + build_manifest + write_manifest (+ contact_sheet when it has images): the rule's body."""
    spec = spec if isinstance(spec, DatasetSpec) else DatasetSpec.from_dict(name, spec)
    coco = load_coco(annotations_dir, split)
    df, meta = build_manifest(spec, coco, image_dir=image_dir, seed=seed)
    write_manifest(df, meta, out_tsv)
    if contact_png is not None:
        if (df["modality"] == "image").any():
            contact_sheet(df, image_dir, contact_png)
        else:
            logger.info("dataset %s is text-only: no contact sheet", name)
    return df, meta


__all__ = [
    "ATTRIBUTES",
    "CAPTION_SEP",
    "MANIFEST_COLUMNS",
    "CocoFormatError",
    "CocoIndex",
    "DatasetSpec",
    "ImageLoadError",
    "apply_transform",
    "assign_folds",
    "build_dataset",
    "build_manifest",
    "check_manifest",
    "contact_sheet",
    "load_coco",
    "load_example_image",
    "parse_transform",
    "read_manifest",
    "spec_from_config",
    "to_rgb",
    "validate_images",
    "write_manifest",
]
