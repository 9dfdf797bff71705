"""CIFAR-100 (the official python-version archive) as an image source: read, check, export to a manifest.

The archive ``cifar-100-python.tar.gz`` (url, size, md5 and sha256 in the config's ``cifar100.archive``,
verified by :func:`repshift.data.download.download` before extraction) unpacks to::

    cifar-100-python/train   pickle: 50,000 images
    cifar-100-python/test    pickle: 10,000 images
    cifar-100-python/meta    pickle: label names

``train`` and ``test`` are dicts with byte-string keys (they were written by Python 2): ``b"data"`` an
N x 3072 uint8 array, each row one 32 x 32 image stored as the red plane, then green, then blue, each plane
row-major; ``b"fine_labels"`` and ``b"coarse_labels"`` lists of N ints (0..99 and 0..19);
``b"filenames"`` N byte strings; ``b"batch_label"``. ``meta`` holds ``b"fine_label_names"`` (100) and
``b"coarse_label_names"`` (20) as byte strings; a label id is an index into these lists (the official
order, alphabetical). Each fine class belongs to exactly one coarse class (superclass).

:func:`read_cifar100` loads and checks those files; :func:`export_cifar100` writes the selected images of one
split as lossless PNGs (``<out_dir>/images/<split>/<index>.png``) and returns a manifest in the layout of
:mod:`repshift.datasets` (one image row per picture; image_id = group = index within the split; an extra
``split`` column records the official split) plus its sidecar metadata. The images are handed to each
model's own processor at extraction (:func:`repshift.data.images.load_example_image`), unresized here.

:func:`make_fake_cifar100` and :func:`write_cifar_archive_tar` write a small archive in the genuine format
(Python-2 style pickles, same keys and dtypes, real class names and superclasses), for tests and the demo.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from repshift.data.coco import _stable_int, check_class_size
from repshift.data.download import extract_archive, fetch_archive
from repshift.formats.atomic import atomic_dir
from repshift.formats.manifest import MANIFEST_COLUMNS, _counts, assign_folds, check_manifest, write_manifest
from repshift.formats.provenance import config_hash, provenance

log = logging.getLogger(__name__)


#: Folder the official archive unpacks to.
CIFAR100_DIR = "cifar-100-python"


SPLITS = ("train", "test")


LABEL_LEVELS = ("fine", "coarse")


#: Images per split in the official release.
OFFICIAL_SIZES = {"train": 50_000, "test": 10_000}


IMAGE_SIDE = 32


N_PIXELS = 3 * IMAGE_SIDE * IMAGE_SIDE


#: Manifest columns: repshift's layout plus the official split.
CIFAR_MANIFEST_COLUMNS = (*MANIFEST_COLUMNS, "split")


# The 20 superclasses and their 5 classes each, as listed on https://www.cs.toronto.edu/~kriz/cifar.html.
# Label ids are positions in the sorted name lists, which is the order of the official ``meta`` file.
_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}


FINE_LABEL_NAMES: tuple[str, ...] = tuple(sorted(n for fine in _SUPERCLASSES.values() for n in fine))


COARSE_LABEL_NAMES: tuple[str, ...] = tuple(sorted(_SUPERCLASSES))


#: Coarse label id of each fine label id.
COARSE_OF_FINE: tuple[int, ...] = tuple(
    COARSE_LABEL_NAMES.index(next(c for c, fine in _SUPERCLASSES.items() if name in fine))
    for name in FINE_LABEL_NAMES
)


assert len(FINE_LABEL_NAMES) == 100 and len(COARSE_LABEL_NAMES) == 20


_SPLIT_KEYS = (b"data", b"fine_labels", b"coarse_labels", b"filenames")


_META_KEYS = {b"fine_label_names": 100, b"coarse_label_names": 20}


# The only globals a CIFAR-100 pickle refers to (numpy arrays and dtypes; `_codecs.encode` is how Python 3
# writes bytes at protocol 2). Anything else is refused before it is called.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class CifarFormatError(ValueError):
    """A CIFAR-100 file is malformed or truncated (the message names the file)."""


class _CifarUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise CifarFormatError(
                f"{self._path}: refusing to load {module}.{name}: not part of the CIFAR-100 format"
            )
        return super().find_class(module, name)


def _unpickle(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(
            f"CIFAR-100 file not found: {path} (extract cifar-100-python.tar.gz so that "
            f"{CIFAR100_DIR}/train, test and meta exist)"
        )
    try:
        with path.open("rb") as f:
            # The CIFAR-100 python version *is* a set of pickles (written by Python 2, hence
            # encoding="bytes"). These files are the dataset's own trusted archive, checked against
            # the configured checksums by download() before extraction; the unpickler also refuses any global
            # but numpy's array and dtype constructors.
            return _CifarUnpickler(f, path).load()
    except CifarFormatError:
        raise
    except Exception as exc:  # EOFError, UnpicklingError, ValueError, ... for damaged or truncated files
        raise CifarFormatError(
            f"{path}: cannot unpickle ({type(exc).__name__}: {exc}); the file is damaged or truncated: "
            "delete the folder and extract the archive again"
        ) from exc


def _get(obj: Any, key: bytes, path: Path) -> Any:
    if not isinstance(obj, dict):
        raise CifarFormatError(f"{path}: expected a dict at the top level, got {type(obj).__name__}")
    if key not in obj:
        have = sorted(k.decode("latin-1") if isinstance(k, bytes) else repr(k) for k in obj)
        raise CifarFormatError(f"{path}: missing key {key.decode()!r} (keys present: {have})")
    return obj[key]


def _decode(items: Any, what: str, path: Path) -> list[str]:
    if not isinstance(items, list | tuple):
        raise CifarFormatError(f"{path}: {what} must be a list, got {type(items).__name__}")
    out = []
    for k, item in enumerate(items):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CifarFormatError(f"{path}: {what}[{k}] is not valid UTF-8: {item!r}") from exc
        if not isinstance(item, str) or not item:
            raise CifarFormatError(f"{path}: {what}[{k}] is not a non-empty string: {item!r}")
        out.append(item)
    return out


def _labels(values: Any, what: str, n: int, n_classes: int, path: Path) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise CifarFormatError(f"{path}: {what} has shape {arr.shape}, expected ({n},) (one per image)")
    if arr.dtype.kind not in "iu":
        raise CifarFormatError(f"{path}: {what} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero((arr < 0) | (arr >= n_classes))
    if bad.size:
        raise CifarFormatError(
            f"{path}: {what}[{bad[0]}] = {arr[bad[0]]} is outside 0..{n_classes - 1} "
            f"({bad.size} labels out of range)"
        )
    return arr


def _read_meta(folder: Path) -> tuple[list[str], list[str]]:
    path = folder / "meta"
    obj = _unpickle(path)
    names = []
    for key, n in _META_KEYS.items():
        got = _decode(_get(obj, key, path), key.decode(), path)
        if len(got) != n:
            raise CifarFormatError(
                f"{path}: {key.decode()} has {len(got)} names, CIFAR-100 has {n} (is this CIFAR-10's meta?)"
            )
        if len(set(got)) != n:
            dup = next(x for x in got if got.count(x) > 1)
            raise CifarFormatError(f"{path}: {key.decode()} lists {dup!r} twice")
        names.append(got)
    return names[0], names[1]


def _read_split(folder: Path, split: str, n_fine: int, n_coarse: int) -> dict[str, Any]:
    path = folder / split
    obj = _unpickle(path)
    data = _get(obj, b"data", path)
    if not isinstance(data, np.ndarray):
        raise CifarFormatError(f"{path}: data must be a numpy array, got {type(data).__name__}")
    if data.dtype != np.uint8:
        raise CifarFormatError(f"{path}: data must be uint8, got {data.dtype}")
    if data.ndim != 2 or data.shape[1] != N_PIXELS or data.shape[0] == 0:
        raise CifarFormatError(
            f"{path}: data has shape {data.shape}, expected (N, {N_PIXELS}) with N > 0 "
            f"(3 planes of {IMAGE_SIDE}x{IMAGE_SIDE})"
        )
    n = data.shape[0]
    fine = _labels(_get(obj, b"fine_labels", path), "fine_labels", n, n_fine, path)
    coarse = _labels(_get(obj, b"coarse_labels", path), "coarse_labels", n, n_coarse, path)
    filenames = _decode(_get(obj, b"filenames", path), "filenames", path)
    if len(filenames) != n:
        raise CifarFormatError(f"{path}: {len(filenames)} filenames for {n} images")
    if n != OFFICIAL_SIZES[split]:
        log.info("%s: %d images (the official release has %d)", path, n, OFFICIAL_SIZES[split])
    # rows are R plane, G plane, B plane, each row-major 32x32 -> (N, H, W, C)
    images_NHWC = data.reshape(n, 3, IMAGE_SIDE, IMAGE_SIDE).transpose(0, 2, 3, 1)
    return {
        "file": path,
        "images_NHWC": images_NHWC,
        "fine_labels_N": fine,
        "coarse_labels_N": coarse,
        "filenames": filenames,
    }


def cifar_folder(root: str | os.PathLike) -> Path:
    """The ``cifar-100-python`` folder: ``root`` itself when it holds ``meta``, else ``root/cifar-100-python``."""
    root = Path(root)
    if (root / "meta").is_file() or root.name == CIFAR100_DIR:
        return root
    return root / CIFAR100_DIR


def read_cifar100(root: str | os.PathLike, *, splits: Sequence[str] = SPLITS) -> dict[str, Any]:
    """Read and check the extracted official archive (``root`` is ``cifar-100-python/`` or its parent).

    Returns ``{"folder", "fine_label_names", "coarse_label_names", "coarse_of_fine", <split>: {...}}`` with,
    for each split in ``splits``: ``images_NHWC`` (N, 32, 32, 3) uint8 (a view of the file's rows),
    ``fine_labels_N`` / ``coarse_labels_N`` int64, ``filenames`` (list of str) and ``file`` (its path).
    ``coarse_of_fine[k]`` is the coarse label of fine label k (-1 if no image has fine label k).

    Raises :class:`CifarFormatError` naming the file for anything malformed or truncated: not a pickle, a
    missing key, a wrong dtype or shape, labels out of range, name lists of the wrong length, or a fine class
    that appears under two coarse classes. A missing file is a ``FileNotFoundError`` naming it.
    """
    folder = cifar_folder(root)
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise ValueError(f"unknown CIFAR-100 split {bad[0]!r}; choose from {SPLITS}")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"CIFAR-100 folder not found: {folder} (extract cifar-100-python.tar.gz so that it exists)"
        )
    fine_names, coarse_names = _read_meta(folder)
    out: dict[str, Any] = {
        "folder": folder,
        "fine_label_names": fine_names,
        "coarse_label_names": coarse_names,
    }
    coarse_of_fine = np.full(len(fine_names), -1, dtype=np.int64)
    for split in dict.fromkeys(splits):
        part = _read_split(folder, split, len(fine_names), len(coarse_names))
        pairs = np.unique(np.stack([part["fine_labels_N"], part["coarse_labels_N"]], axis=1), axis=0)
        for f, c in pairs:
            if coarse_of_fine[f] not in (-1, c) or (pairs[:, 0] == f).sum() > 1:
                raise CifarFormatError(
                    f"{part['file']}: fine class {fine_names[f]!r} appears under more than one coarse class "
                    "(in CIFAR-100 each class belongs to exactly one superclass)"
                )
            coarse_of_fine[f] = c
        out[split] = part
        log.info("read %s: %d images", part["file"], len(part["fine_labels_N"]))
    out["coarse_of_fine"] = coarse_of_fine.tolist()
    return out


def _file_digest(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    return {"size": path.stat().st_size, "sha256": sha256}


def _select(
    labels_N: np.ndarray,
    names: Sequence[str],
    n_per_class: int | None,
    seed: int,
    allow_fewer: bool,
    where: str,
    source: str = "CIFAR-100",
) -> tuple[np.ndarray, dict[str, int]]:
    """Indices kept (sorted by label, then index) and the shortfall per class."""
    chosen: list[np.ndarray] = []
    shortfall: dict[str, int] = {}
    if n_per_class is None:
        absent = [name for k, name in enumerate(names) if not (labels_N == k).any()]
        if absent:
            log.warning("dataset %r: %d classes have no image: %s", where, len(absent), ", ".join(absent))
    for k, name in enumerate(names):
        pool = np.flatnonzero(labels_N == k)  # sorted ids
        if n_per_class is None:
            chosen.append(pool)
            continue
        if pool.size < n_per_class:
            check_class_size(
                where,
                source,
                f"images of class {name!r}",
                usable=int(pool.size),
                wanted=n_per_class,
                allow_fewer=allow_fewer,
            )
            shortfall[name] = n_per_class - pool.size
        rng = np.random.default_rng([seed, _stable_int(name)])
        chosen.append(np.sort(pool[rng.permutation(pool.size)[:n_per_class]]))
    return np.concatenate(chosen).astype(np.int64), shortfall


def _write_png(img_HWC: np.ndarray, path: Path) -> None:
    Image.fromarray(np.ascontiguousarray(img_HWC)).save(path, format="PNG")


def export_cifar100(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: str,
    label_level: str = "fine",
    n_per_class: int | None = None,
    seed: int,
    folds: int = 5,
    allow_fewer: bool = False,
    name: str | None = None,
    classes: Sequence[str] | None = None,
    archive: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Write the selected images of one official split as PNGs and return (manifest, sidecar metadata).

    Images go to ``<out_dir>/images/<split>/<index>.png`` (lossless, exactly the archive's pixels; the folder
    is built in a temporary sibling and renamed into place, replacing an older one); the manifest's ``file``
    is relative to ``<out_dir>/images`` (``meta["image_dir"]``), which is the ``image_dir`` to extract with.

    Rows (sorted by label, then index): ``example_id`` ``"<split>-<index>"``, ``image_id`` = ``group`` = the
    index within the split, ``modality`` ``image``, ``text``/``captions``/``transform`` empty, ``label`` the
    official id at ``label_level`` (fine 0..99 or coarse 0..19; ``meta["label_names"][label]``) or, when
    ``classes`` names a subset (names at ``label_level``), the position in ``classes`` (the official id is
    kept in ``meta["official_label_ids"]``),
    ``fold`` stratified by label and grouped by image (:func:`repshift.formats.manifest.assign_folds`), and ``split``.
    ``archive`` (the config's url and checksums) is recorded in the sidecar. ``n_per_class=None`` keeps
    every image of the split; otherwise each class draws ``n_per_class`` images
    from a permutation of its sorted ids seeded by ``(seed, class name)`` (too few is an error unless
    ``allow_fewer``). Use one ``out_dir`` per dataset: two exports of one split into the same folder replace
    each other's images.
    """
    _check_export_args(split, label_level, n_per_class, folds)
    n_per_class = None if n_per_class is None else int(n_per_class)
    name = name or f"cifar100-{split}-{label_level}"
    out_dir = Path(out_dir)
    data = read_cifar100(root, splits=(split,))
    part = data[split]
    official_N = part[f"{label_level}_labels_N"]
    official_names = data[f"{label_level}_label_names"]
    label_names, official_ids, remap = _label_map(official_names, classes, label_level, name)
    labels_N = remap[official_N]  # -1: a class not asked for
    idx_N, shortfall = _select(
        labels_N, label_names, n_per_class, seed, allow_fewer, name, f"CIFAR-100 {split}"
    )
    if idx_N.size == 0:
        raise ValueError(f"dataset {name!r}: no images selected from {part['file']}")

    labels = labels_N[idx_N]
    most = int(np.bincount(labels).max())
    if most < folds:
        raise ValueError(
            f"dataset {name!r}: at most {most} images per class, fewer than folds={folds}; "
            "raise n_per_class or lower folds"
        )
    folds_N = assign_folds(labels, idx_N, n_folds=folds, seed=seed)

    image_dir = out_dir / "images"
    with atomic_dir(image_dir / split) as tmp:
        for i in idx_N:
            _write_png(part["images_NHWC"][i], tmp / f"{i}.png")
    log.info("dataset %s: wrote %d PNGs to %s", name, idx_N.size, image_dir / split)

    df = _manifest(idx_N, labels, label_names, folds_N, split)
    df = df[list(CIFAR_MANIFEST_COLUMNS)]
    check_manifest(df)

    spec = {
        "source": "cifar100",
        "split": split,
        "classes": "all" if classes is None else list(classes),
        "label_level": label_level,
        "n_per_class": n_per_class,
        "folds": folds,
        "allow_fewer": allow_fewer,
    }
    counts = {"n_in_split": int(labels_N.size), "shortfall": shortfall}
    meta = _sidecar(name, spec, seed, data, df, label_names, official_ids, image_dir, archive, counts)
    log.info("dataset %s: %d rows from %s (%s level)", name, len(df), split, label_level)
    return df, meta


def _check_export_args(split: str, label_level: str, n_per_class, folds) -> None:
    """ValueError naming the argument when a split, level, class size or fold count is not allowed."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if label_level not in LABEL_LEVELS:
        raise ValueError(f"label_level must be one of {LABEL_LEVELS}, got {label_level!r}")
    if n_per_class is not None and (
        isinstance(n_per_class, bool) or not isinstance(n_per_class, int | np.integer) or n_per_class < 1
    ):
        raise ValueError(f"n_per_class must be a positive integer or None, got {n_per_class!r}")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")


def _label_map(official_names, classes, label_level: str, name: str):
    """(label names, their official ids, official id -> label or -1): every class, or the ``classes`` subset in
    its order (unknown or repeated names are an error naming the dataset)."""
    if classes is None:
        label_names, official_ids = list(official_names), list(range(len(official_names)))
    else:
        unknown = [c for c in classes if c not in official_names]
        if unknown:
            raise ValueError(
                f"dataset {name!r}: {unknown[0]!r} is not a CIFAR-100 {label_level} class "
                f"(e.g. {', '.join(official_names[:5])}, ...)"
            )
        if len(set(classes)) != len(classes):
            raise ValueError(f"dataset {name!r}: a class is listed twice in {list(classes)}")
        label_names = list(classes)
        official_ids = [official_names.index(c) for c in classes]
    remap = np.full(len(official_names), -1, dtype=np.int64)
    remap[official_ids] = np.arange(len(official_ids))
    return label_names, official_ids, remap


def _manifest(idx_N, labels, label_names, folds_N, split: str) -> pd.DataFrame:
    """Manifest rows of the exported images (one image row per selected index)."""
    return pd.DataFrame(
        {
            "example_id": [f"{split}-{i}" for i in idx_N],
            "image_id": idx_N,
            "group": idx_N,
            "modality": "image",
            "file": [f"{split}/{i}.png" for i in idx_N],
            "text": "",
            "captions": "",
            "label": labels,
            "label_name": [label_names[k] for k in labels],
            "transform": "",
            "fold": folds_N,
            "split": split,
        }
    )


def _sidecar(
    name, spec, seed, data, df, label_names, official_ids, image_dir, archive, counts
) -> dict[str, Any]:
    """The manifest's sidecar metadata: the spec and its hash, label names and official ids, counts, the source
    archive and its files' digests, provenance."""
    split, label_level = spec["split"], spec["label_level"]
    return {
        "dataset": name,
        "spec": spec,
        "seed": seed,
        "config_hash": config_hash(spec),
        "split": split,
        "label_level": label_level,
        "image_dir": str(image_dir),
        "label_names": list(label_names),
        "official_label_ids": official_ids,
        "coarse_of_fine": data["coarse_of_fine"],
        "n_rows": len(df),
        "n_in_split": counts["n_in_split"],
        "counts": _counts(df, label_names),
        "shortfall": counts["shortfall"],
        "source": {
            "archive": dict(archive) if archive is not None else None,
            "folder": str(data["folder"]),
            "files": {p.name: _file_digest(p) for p in (data["folder"] / "meta", data["folder"] / split)},
        },
        "provenance": provenance({"spec": spec, "seed": seed}),
    }


@dataclass(frozen=True)
class CifarSpec:
    """One CIFAR-100 dataset of ``config.yaml`` (the keys a ``source: cifar100`` dataset takes)."""

    name: str
    split: str = "test"
    level: str = "fine"
    classes: tuple[str, ...] | None = None  # None (config: `all`): every class, official label ids
    n_per_class: int | None = None
    folds: int = 5
    allow_fewer: bool = False

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> CifarSpec:
        allowed = [f.name for f in dataclasses.fields(cls) if f.name != "name"]
        if d.get("source", "cifar100") != "cifar100":
            raise ValueError(f"dataset {name!r}: source must be cifar100 here, got {d['source']!r}")
        kw = {k: v for k, v in d.items() if k not in ("source", "modality")}
        classes = kw.get("classes")
        if classes == "all":
            kw["classes"] = None
        elif classes is not None:
            if isinstance(classes, str) or not isinstance(classes, Sequence):
                raise ValueError(
                    f"dataset {name!r}: classes must be `all` or a list of names, got {classes!r}"
                )
            kw["classes"] = tuple(classes)
        for key in kw:
            if key not in allowed:
                raise ValueError(
                    f"dataset {name!r}: unknown key {key!r} for a CIFAR-100 dataset "
                    f"(allowed: {', '.join(sorted(allowed))})"
                )
        if d.get("modality", "image") != "image":
            raise ValueError(
                f"dataset {name!r}: CIFAR-100 datasets are image-only, got modality {d['modality']!r}"
            )
        return cls(name=name, **kw)

    def __post_init__(self) -> None:
        n = f"dataset {self.name!r}"
        if self.split not in SPLITS:
            raise ValueError(f"{n}: split must be one of {SPLITS}, got {self.split!r}")
        if self.level not in LABEL_LEVELS:
            raise ValueError(f"{n}: level must be one of {LABEL_LEVELS} for CIFAR-100, got {self.level!r}")
        v = self.n_per_class
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"{n}: n_per_class must be an integer >= 1 or null, got {v!r}")
        if not isinstance(self.folds, int) or isinstance(self.folds, bool) or self.folds < 2:
            raise ValueError(f"{n}: folds must be an integer >= 2, got {self.folds!r}")
        if not isinstance(self.allow_fewer, bool):
            raise ValueError(f"{n}: allow_fewer must be true or false, got {self.allow_fewer!r}")
        if self.classes is not None:
            known = FINE_LABEL_NAMES if self.level == "fine" else COARSE_LABEL_NAMES
            if not self.classes:
                raise ValueError(f"{n}: classes is empty; list {self.level} class names or write `all`")
            for c in self.classes:
                if c not in known:
                    other = COARSE_LABEL_NAMES if self.level == "fine" else FINE_LABEL_NAMES
                    hint = (
                        f"; it is a {'coarse' if self.level == 'fine' else 'fine'} class: set level accordingly"
                        if c in other
                        else f" (names use underscores, e.g. {', '.join(known[:4])}, ...)"
                    )
                    raise ValueError(f"{n}: {c!r} is not a CIFAR-100 {self.level} class{hint}")
            dup = [c for c in self.classes if self.classes.count(c) > 1]
            if dup:
                raise ValueError(f"{n}: class {dup[0]!r} listed twice")

    @property
    def label_names(self) -> list[str]:
        if self.classes is not None:
            return list(self.classes)
        return list(FINE_LABEL_NAMES if self.level == "fine" else COARSE_LABEL_NAMES)


def fetch_cifar100(root: str | os.PathLike, archive: Mapping[str, Any]) -> Path:
    """Download (resumable, verified) and extract the official archive under ``root``; return the folder.

    ``archive`` is the config's ``cifar100.archive`` (url, size, md5, sha256). The archive is kept in
    ``root/archives/``; extraction is skipped when ``root/cifar-100-python`` exists.
    """
    root = Path(root)
    archive = fetch_archive(dict(archive), root / "archives", where="cifar100.archive")
    folder = root / CIFAR100_DIR
    if not folder.is_dir():
        extract_archive(archive, root, members_prefix=f"{CIFAR100_DIR}/")
    return folder


def build_cifar100_dataset(
    name: str,
    spec: Mapping[str, Any] | CifarSpec,
    *,
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    out_tsv: str | os.PathLike,
    seed: int,
    archive: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """export_cifar100 + write_manifest (TSV + JSON sidecar): the body of a build rule."""
    spec = spec if isinstance(spec, CifarSpec) else CifarSpec.from_dict(name, spec)
    df, meta = export_cifar100(
        root,
        out_dir,
        split=spec.split,
        label_level=spec.level,
        n_per_class=spec.n_per_class,
        seed=seed,
        folds=spec.folds,
        allow_fewer=spec.allow_fewer,
        name=name,
        classes=spec.classes,
        archive=archive,
    )
    write_manifest(df, meta, out_tsv)
    return df, meta
