"""ImageNet-1k (ILSVRC-2012) as an image source: an existing local copy, read in place, never downloaded.

The licence forbids redistribution, so repshift only reads a copy the user already has, in the standard
layout (the Kaggle "ImageNet Object Localization Challenge" release and most cluster copies)::

    <root>/LOC_synset_mapping.txt        "n01440764 tench, Tinca tinca": one class per line, official order
    <root>/train/<wnid>/*.JPEG           one folder per class, named by WordNet id
    <root>/val/<wnid>/*.JPEG             val as class folders, or
    <root>/val/*.JPEG                    val flat, labelled by
    <root>/LOC_val_solution.csv          "ImageId,PredictionString" (first token of the string = wnid)

(``train``/``val`` may also sit under ``ILSVRC/Data/CLS-LOC/``, as in the Kaggle archive.) A label id is
the position of the class in ``LOC_synset_mapping.txt`` (sorted WordNet ids, the official order); a class
is named by its first name (``tench``). Each class draws ``n_per_class`` images from a permutation seeded by
``(seed, wnid)``; files that do not decode are skipped, counted in the sidecar and replaced by the next
drawn image. The manifest (:mod:`repshift.formats.manifest`) points at the files in place (``file`` is
relative to ``root``); ``image_id`` = ``group`` = the image's index in the sorted listing of its split, so
folds are grouped by image.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from repshift.data.coco import _stable_int, check_class_size
from repshift.data.images import validate_images
from repshift.formats.manifest import MANIFEST_COLUMNS, _counts, assign_folds, check_manifest, write_manifest
from repshift.formats.provenance import config_hash, provenance

log = logging.getLogger(__name__)


SPLITS = ("train", "val")


SYNSET_MAPPING = "LOC_synset_mapping.txt"


VAL_SOLUTION = "LOC_val_solution.csv"


IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


IMAGENET_MANIFEST_COLUMNS = (*MANIFEST_COLUMNS, "split", "wnid")


EXPECTED_LAYOUT = (
    "<root>/LOC_synset_mapping.txt ('n01440764 tench, Tinca tinca' per line), <root>/train/<wnid>/*.JPEG, and "
    "<root>/val/<wnid>/*.JPEG or <root>/val/*.JPEG with <root>/LOC_val_solution.csv (the standard ILSVRC-2012 "
    "layout; ImageNet is never downloaded by repshift: its licence requires each user to obtain it)"
)


def _missing(what: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"ImageNet: {what} not found. Expected the layout {EXPECTED_LAYOUT}; set imagenet.root"
    )


def _data_dir(root: Path, split: str) -> Path:
    for cand in (root / split, root / "ILSVRC" / "Data" / "CLS-LOC" / split):
        if cand.is_dir():
            return cand
    raise _missing(root / split)


def read_synset_mapping(root: str | os.PathLike) -> dict[str, list[str]]:
    """``{wnid: [names]}`` in file order from ``LOC_synset_mapping.txt``; ValueError naming the line if malformed."""
    path = Path(root) / SYNSET_MAPPING
    if not path.is_file():
        raise _missing(path)
    out: dict[str, list[str]] = {}
    for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        wnid, _, names = line.strip().partition(" ")
        if not (wnid.startswith("n") and wnid[1:].isdigit()) or not names.strip():
            raise ValueError(f"{path}:{k}: expected 'n01440764 tench, Tinca tinca', got {line!r}")
        if wnid in out:
            raise ValueError(f"{path}:{k}: {wnid} listed twice")
        out[wnid] = [n.strip() for n in names.split(",") if n.strip()]
    return out


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def list_split(root: str | os.PathLike, split: str, wnids: Sequence[str]) -> pd.DataFrame:
    """Every image of ``split``: columns ``file`` (relative to ``root``, sorted) and ``wnid``. Val is read from
    class folders when it has any, else flat with ``LOC_val_solution.csv``. Classes not in ``wnids`` are errors."""
    if split not in SPLITS:
        raise ValueError(f"ImageNet split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    folder = _data_dir(root, split)
    known = set(wnids)
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    rows: list[tuple[str, str]] = []
    if class_dirs:
        for d in class_dirs:
            if d.name not in known:
                raise ValueError(f"{d}: folder {d.name!r} is not a WordNet id of {root / SYNSET_MAPPING}")
            rows += [(p.relative_to(root).as_posix(), d.name) for p in _images_in(d)]
    elif split == "val":
        rows = _flat_val(root, folder, known)
    else:
        raise _missing(folder / "<wnid>")
    return pd.DataFrame(rows, columns=["file", "wnid"]).sort_values("file", ignore_index=True)


def _flat_val(root: Path, folder: Path, known: set[str]) -> list[tuple[str, str]]:
    path = root / VAL_SOLUTION
    if not path.is_file():
        raise _missing(path)
    labels: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise ValueError(
                f"{path}: expected the header 'ImageId,PredictionString', got {reader.fieldnames}"
            )
        for k, rec in enumerate(reader, 2):
            wnid = (rec["PredictionString"] or "").split(" ")[0]
            if wnid not in known:
                raise ValueError(f"{path}:{k}: {wnid!r} is not a WordNet id of {root / SYNSET_MAPPING}")
            labels[rec["ImageId"]] = wnid
    rows = []
    for p in _images_in(folder):
        if p.stem not in labels:
            raise ValueError(f"{p}: no row for {p.stem!r} in {path}")
        rows.append((p.relative_to(root).as_posix(), labels[p.stem]))
    return rows


@dataclass(frozen=True)
class ImagenetSpec:
    """One ImageNet dataset of the config (the keys a ``source: imagenet`` dataset takes)."""

    name: str
    split: str = "val"
    classes: tuple[str, ...] | None = None  # WordNet ids or first names; None (config: `all`): all 1000
    n_per_class: int | None = None  # None: every image of the class
    folds: int = 5
    allow_fewer: bool = False
    validate: bool = True

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> ImagenetSpec:
        allowed = [f.name for f in dataclasses.fields(cls) if f.name != "name"]
        if d.get("modality", "image") != "image":
            raise ValueError(
                f"dataset {name!r}: ImageNet datasets are image-only, got modality {d['modality']!r}"
            )
        kw = {k: v for k, v in d.items() if k not in ("source", "modality")}
        for key in kw:
            if key not in allowed:
                raise ValueError(
                    f"dataset {name!r}: unknown key {key!r} for an ImageNet dataset (allowed: {', '.join(sorted(allowed))})"
                )
        classes = kw.get("classes")
        kw["classes"] = None if classes in (None, "all") else tuple(classes)
        return cls(name=name, **kw)

    def __post_init__(self) -> None:
        n = f"dataset {self.name!r}"
        if self.split not in SPLITS:
            raise ValueError(f"{n}: ImageNet split must be one of {SPLITS}, got {self.split!r}")
        v = self.n_per_class
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"{n}: n_per_class must be an integer >= 1 or null, got {v!r}")
        if not isinstance(self.folds, int) or isinstance(self.folds, bool) or self.folds < 2:
            raise ValueError(f"{n}: folds must be an integer >= 2, got {self.folds!r}")
        if self.classes is not None and (not self.classes or len(set(self.classes)) != len(self.classes)):
            raise ValueError(f"{n}: classes must be `all` or a non-empty list without repeats")


def _resolve_classes(spec: ImagenetSpec, mapping: Mapping[str, list[str]]) -> list[str]:
    if spec.classes is None:
        return list(mapping)
    by_name = {names[0]: wnid for wnid, names in mapping.items()}
    out = []
    for c in spec.classes:
        wnid = c if c in mapping else by_name.get(c)
        if wnid is None:
            raise ValueError(
                f"dataset {spec.name!r}: {c!r} is neither a WordNet id nor a first class name of {SYNSET_MAPPING} "
                f"(e.g. {', '.join(list(mapping)[:2])} or {', '.join(n[0] for n in list(mapping.values())[:2])})"
            )
        out.append(wnid)
    return out


def _draw(
    pool: pd.DataFrame, wnid: str, spec: ImagenetSpec, root: Path, seed: int
) -> tuple[pd.DataFrame, dict]:
    """Up to n_per_class decodable images of one class, in seeded order; bad files skipped and returned."""
    rng = np.random.default_rng([seed, _stable_int(wnid)])
    order = pool.iloc[rng.permutation(len(pool))]
    want = len(order) if spec.n_per_class is None else spec.n_per_class
    kept: list[int] = []
    bad: dict[str, str] = {}
    start = 0
    while len(kept) < want and start < len(order):
        chunk = order.iloc[start : start + want - len(kept)]
        start += len(chunk)
        found = validate_images(chunk, root) if spec.validate else {}
        bad.update(found)
        kept += [i for i, f in zip(chunk.index, chunk["file"], strict=True) if f not in found]
    return pool.loc[sorted(kept)], bad


def build_manifest(
    spec: ImagenetSpec, root: str | os.PathLike, *, seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Balanced manifest of one split (rows sorted by label, then file) and its sidecar metadata."""
    root = Path(root)
    if not root.is_dir():
        raise _missing(root)
    mapping = read_synset_mapping(root)
    wnids = _resolve_classes(spec, mapping)
    listing = list_split(root, spec.split, list(mapping))
    listing["image_id"] = np.arange(len(listing), dtype=np.int64)
    parts, bad, shortfall = [], {}, {}
    for label, wnid in enumerate(wnids):
        chosen, found = _draw(listing[listing["wnid"] == wnid], wnid, spec, root, seed)
        bad.update(found)
        if spec.n_per_class is not None and len(chosen) < spec.n_per_class:
            detail = f"{len(found)} unreadable skipped" if found else ""
            what = f"images of class {mapping[wnid][0]!r} ({wnid})"
            check_class_size(
                spec.name,
                f"ImageNet {spec.split}",
                what,
                usable=len(chosen),
                wanted=spec.n_per_class,
                allow_fewer=spec.allow_fewer,
                detail=detail,
            )
            shortfall[wnid] = spec.n_per_class - len(chosen)
        parts.append(chosen.assign(label=label))
    df = pd.concat(parts, ignore_index=True)
    if df.empty:
        raise ValueError(f"dataset {spec.name!r}: no usable image in {root} ({spec.split})")
    label_names = [mapping[w][0] for w in wnids]
    most = int(np.bincount(df["label"]).max())
    if most < spec.folds:
        raise ValueError(
            f"dataset {spec.name!r}: at most {most} images per class, fewer than folds={spec.folds}"
        )
    df = pd.DataFrame(
        {
            "example_id": [f"{spec.split}-{Path(f).stem}" for f in df["file"]],
            "image_id": df["image_id"],
            "group": df["image_id"],
            "modality": "image",
            "file": df["file"],
            "text": "",
            "captions": "",
            "label": df["label"].astype(np.int64),
            "label_name": [label_names[k] for k in df["label"]],
            "transform": "",
            "fold": assign_folds(
                df["label"].to_numpy(), df["image_id"].to_numpy(), n_folds=spec.folds, seed=seed
            ),
            "split": spec.split,
            "wnid": df["wnid"],
        }
    )[list(IMAGENET_MANIFEST_COLUMNS)]
    check_manifest(df)
    meta = _sidecar(spec, df, root, seed, wnids, mapping, len(listing), shortfall, bad)
    log.info(
        "dataset %s: %d rows from ImageNet %s (%d unreadable skipped)",
        spec.name,
        len(df),
        spec.split,
        len(bad),
    )
    return df, meta


def _sidecar(
    spec: ImagenetSpec,
    df: pd.DataFrame,
    root: Path,
    seed: int,
    wnids: list[str],
    mapping: Mapping[str, list[str]],
    n_in_split: int,
    shortfall: dict[str, int],
    bad: dict[str, str],
) -> dict[str, Any]:
    label_names = [mapping[w][0] for w in wnids]
    spec_d = {k: v for k, v in dataclasses.asdict(spec).items() if k != "name"} | {"source": "imagenet"}
    spec_d["classes"] = "all" if spec.classes is None else list(spec.classes)
    meta = {
        "dataset": spec.name,
        "spec": spec_d,
        "seed": seed,
        "config_hash": config_hash(spec_d),
        "split": spec.split,
        "image_dir": str(root),
        "label_names": label_names,
        "wnids": wnids,
        "official_label_ids": [list(mapping).index(w) for w in wnids],
        "n_rows": len(df),
        "n_in_split": n_in_split,
        "counts": _counts(df, label_names),
        "shortfall": shortfall,
        "skipped": {"n": len(bad), "files": bad},
        "provenance": provenance({"spec": spec_d, "seed": seed}),
    }
    return meta


def build_imagenet_dataset(
    name: str,
    spec: Mapping[str, Any] | ImagenetSpec,
    *,
    root: str | os.PathLike,
    out_tsv: str | os.PathLike,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """build_manifest + write_manifest (TSV + JSON sidecar): the body of the build rule."""
    spec = spec if isinstance(spec, ImagenetSpec) else ImagenetSpec.from_dict(name, spec)
    df, meta = build_manifest(spec, root, seed=seed)
    write_manifest(df, meta, out_tsv)
    return df, meta
