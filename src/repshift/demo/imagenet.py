"""A tiny ImageNet-1k tree in the standard ILSVRC-2012 layout (tests and the demo): real WordNet ids and
names of the first classes, small JPEGs, val as class folders or flat with ``LOC_val_solution.csv``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from repshift.formats.atomic import atomic_dir

#: The first classes of LOC_synset_mapping.txt (official order), with their names.
CLASSES: tuple[tuple[str, str], ...] = (
    ("n01440764", "tench, Tinca tinca"),
    ("n01443537", "goldfish, Carassius auratus"),
    ("n01484850", "great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias"),
    ("n01491361", "tiger shark, Galeocerdo cuvieri"),
    ("n01494475", "hammerhead, hammerhead shark"),
)


def _jpeg(path: Path, label: int, k: int, side: int, rng: np.random.Generator) -> None:
    base = np.array([(label * 53) % 256, (label * 101 + 40) % 256, (label * 37 + 90) % 256], dtype=np.int16)
    img_HWC = np.clip(base + rng.integers(-30, 31, size=(side, side, 3)), 0, 255).astype(np.uint8)
    img_HWC[: 2 + k % (side // 2)] = 255 - img_HWC[: 2 + k % (side // 2)]  # each image differs
    Image.fromarray(img_HWC).save(path, format="JPEG", quality=90)


def make_fake_imagenet(
    root: str | os.PathLike,
    *,
    n_classes: int = 3,
    n_train: int = 6,
    n_val: int = 5,
    val_layout: str = "folders",
    image_size: int = 24,
    seed: int = 0,
) -> Path:
    """Write ``root`` (replacing it atomically): the mapping of all listed classes, ``n_train`` / ``n_val``
    JPEGs per class for the first ``n_classes``; val as class folders (``folders``) or flat with the solution
    CSV (``flat``). Returns ``root``."""
    if val_layout not in ("folders", "flat"):
        raise ValueError(f"val_layout must be folders or flat, got {val_layout!r}")
    if not 1 <= n_classes <= len(CLASSES):
        raise ValueError(f"n_classes must be in 1..{len(CLASSES)}, got {n_classes}")
    rng = np.random.default_rng(seed)
    root = Path(root)
    with atomic_dir(root) as tmp:
        (tmp / "LOC_synset_mapping.txt").write_text(
            "".join(f"{w} {n}\n" for w, n in CLASSES), encoding="utf-8"
        )
        solution = ["ImageId,PredictionString"]
        val_index = 0
        for label, (wnid, _) in enumerate(CLASSES[:n_classes]):
            (tmp / "train" / wnid).mkdir(parents=True)
            for k in range(n_train):
                _jpeg(tmp / "train" / wnid / f"{wnid}_{k}.JPEG", label, k, image_size, rng)
            val_dir = tmp / "val" / (wnid if val_layout == "folders" else "")
            val_dir.mkdir(parents=True, exist_ok=True)
            for k in range(n_val):
                val_index += 1
                stem = f"ILSVRC2012_val_{val_index:08d}"
                _jpeg(val_dir / f"{stem}.JPEG", label, k, image_size, rng)
                solution.append(f"{stem},{wnid} 1 1 {image_size - 2} {image_size - 2}")
        if val_layout == "flat":
            (tmp / "LOC_val_solution.csv").write_text("\n".join(solution) + "\n", encoding="utf-8")
    return root
