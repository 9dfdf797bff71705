"""The synthetic COCO set: real COCO format, deterministic, visibly separable categories, captions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from repshift.demo.coco import COCO_CATEGORIES, DEMO_CATEGORIES, JPEG_QUALITY, make_synthetic_coco


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    make_synthetic_coco(root, n_images=96, seed=0)
    return root


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_schema_match_coco_2017(coco_root):
    ann = json.loads((coco_root / "annotations" / "instances_val2017.json").read_text())
    cap = json.loads((coco_root / "annotations" / "captions_val2017.json").read_text())
    assert set(ann) == {"info", "licenses", "images", "annotations", "categories"}
    assert set(cap) == {"info", "licenses", "images", "annotations"}
    image_keys = {"id", "file_name", "width", "height", "license", "coco_url", "flickr_url", "date_captured"}
    license_ids = {lic["id"] for lic in ann["licenses"]}
    for img in ann["images"]:
        assert set(img) == image_keys
        assert img["file_name"] == f"{img['id']:012d}.jpg"
        assert img["license"] in license_ids
        with Image.open(coco_root / "val2017" / img["file_name"]) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert im.size == (img["width"], img["height"]) == (64, 64)
    for a in ann["annotations"]:
        assert set(a) == {"id", "image_id", "category_id", "bbox", "area", "segmentation", "iscrowd"}
        assert a["iscrowd"] == 0 and a["area"] > 0 and len(a["bbox"]) == 4
        assert all(len(poly) >= 6 and len(poly) % 2 == 0 for poly in a["segmentation"])
    for c in cap["annotations"]:
        assert set(c) == {"id", "image_id", "caption"}
    assert cap["images"] == ann["images"]
    assert sorted(p.name for p in (coco_root / "val2017").iterdir()) == sorted(
        i["file_name"] for i in ann["images"]
    )


def test_categories_are_the_real_coco_ones(coco_root):
    coco = COCO(str(coco_root / "annotations" / "instances_val2017.json"))
    assert len(coco.cats) == 80 == len(COCO_CATEGORIES)
    real = {
        1: ("person", "person"),
        3: ("car", "vehicle"),
        17: ("cat", "animal"),
        18: ("dog", "animal"),
        59: ("pizza", "food"),
        62: ("chair", "furniture"),
        90: ("toothbrush", "indoor"),
    }
    for cid, (name, sup) in real.items():
        assert (coco.cats[cid]["name"], coco.cats[cid]["supercategory"]) == (name, sup)
    used = {coco.cats[a["category_id"]]["name"] for a in coco.anns.values()}
    assert used == set(DEMO_CATEGORIES)


def test_loads_with_pycocotools_and_has_one_two_and_zero_object_images(coco_root):
    coco = COCO(str(coco_root / "annotations" / "instances_val2017.json"))
    assert len(coco.imgs) == 96
    n_cats = [len({a["category_id"] for a in coco.imgToAnns[i]}) for i in coco.imgs]
    n_anns = [len(coco.imgToAnns[i]) for i in coco.imgs]
    assert n_cats == n_anns  # a two-object image always holds two different categories
    assert n_cats.count(0) >= 1
    assert 0.10 <= n_cats.count(2) / len(n_cats) <= 0.20
    assert n_cats.count(1) + n_cats.count(2) + n_cats.count(0) == 96
    for name in DEMO_CATEGORIES:  # every category has images
        assert coco.getImgIds(catIds=coco.getCatIds(catNms=[name]))
    # segmentation decodes to a mask that fills a good part of its box, inside the image
    for a in coco.anns.values():
        mask_HW = coco.annToMask(a)
        assert mask_HW.shape == (64, 64)
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 64 and y + h <= 64
        assert mask_HW.sum() == pytest.approx(a["area"], abs=1)
        assert a["area"] >= 0.35 * w * h


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    sa = make_synthetic_coco(a, n_images=24, seed=3)
    sb = make_synthetic_coco(b, n_images=24, seed=3)
    make_synthetic_coco(c, n_images=24, seed=4)
    assert sa == sb
    da, db, dc = _tree_digest(a), _tree_digest(b), _tree_digest(c)
    assert da == db
    assert len(da) == 24 + 2
    assert da != dc
    text = (a / "annotations" / "instances_val2017.json").read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":")) + "\n"


def test_rewrite_replaces_in_place_and_splits_live_side_by_side(tmp_path):
    make_synthetic_coco(tmp_path, n_images=12, seed=0, split="train2017")
    before = _tree_digest(tmp_path)
    make_synthetic_coco(tmp_path, n_images=10, seed=1, split="val2017")
    make_synthetic_coco(tmp_path, n_images=10, seed=1, split="val2017")  # rewriting is clean
    after = _tree_digest(tmp_path)
    assert {k: v for k, v in after.items() if "train2017" in k} == before
    assert len(list((tmp_path / "val2017").iterdir())) == 10
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    train = COCO(str(tmp_path / "annotations" / "instances_train2017.json"))
    val = COCO(str(tmp_path / "annotations" / "instances_val2017.json"))
    assert not set(train.imgs) & set(val.imgs)


def test_categories_are_visibly_separable_by_mean_colour_in_their_box(coco_root):
    coco = COCO(str(coco_root / "annotations" / "instances_val2017.json"))
    feats: dict[str, list[np.ndarray]] = {name: [] for name in DEMO_CATEGORIES}
    for image_id, anns in coco.imgToAnns.items():
        if len(anns) != 1:
            continue
        img = coco.imgs[image_id]
        pixels_HW3 = np.asarray(Image.open(coco_root / "val2017" / img["file_name"]), dtype=np.float64)
        x, y, w, h = (int(round(v)) for v in anns[0]["bbox"])
        crop = pixels_HW3[y : y + h, x : x + w]
        feats[coco.cats[anns[0]["category_id"]]["name"]].append(crop.reshape(-1, 3).mean(0))
    centroids_C3 = np.stack([np.mean(feats[n], axis=0) for n in DEMO_CATEGORIES])
    dists_CC = np.linalg.norm(centroids_C3[:, None] - centroids_C3[None], axis=-1)
    assert dists_CC[~np.eye(len(DEMO_CATEGORIES), dtype=bool)].min() > 25
    # nearest-centroid on the mean box colour alone classifies every single-object image
    correct = total = 0
    for k, name in enumerate(DEMO_CATEGORIES):
        for f in feats[name]:
            correct += int(np.argmin(np.linalg.norm(centroids_C3 - f, axis=1)) == k)
            total += 1
    assert correct / total >= 0.95


def test_five_captions_per_image_naming_its_objects(coco_root):
    inst = COCO(str(coco_root / "annotations" / "instances_val2017.json"))
    caps = COCO(str(coco_root / "annotations" / "captions_val2017.json"))
    assert set(caps.imgs) == set(inst.imgs)
    assert len({a["id"] for a in caps.anns.values()}) == len(caps.anns) == 5 * len(caps.imgs)
    templates_seen = set()
    for image_id in inst.imgs:
        texts = [a["caption"] for a in caps.imgToAnns[image_id]]
        assert len(texts) == 5 and len(set(texts)) == 5
        names = {inst.cats[a["category_id"]]["name"] for a in inst.imgToAnns[image_id]}
        for text in texts:
            words = text.replace(",", " ").replace(":", " ").split()
            if names:
                assert names <= set(words), (text, names)
            else:
                assert not set(DEMO_CATEGORIES) & set(words), text
            templates_seen.add(" ".join(w for w in words if w not in DEMO_CATEGORIES))
    assert len(templates_seen) > 20  # varied wording, not one template


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="n_images"):
        make_synthetic_coco(tmp_path, n_images=0)
    with pytest.raises(ValueError, match="image_size"):
        make_synthetic_coco(tmp_path, image_size=8)
    with pytest.raises(ValueError, match="split"):
        make_synthetic_coco(tmp_path, split="../x")
    assert not any(tmp_path.iterdir())


def test_every_image_is_saved_at_the_same_jpeg_quality(coco_root):
    reference = Image.new("RGB", (64, 64), (120, 60, 30))
    path = coco_root.parent / "reference.jpg"
    reference.save(path, quality=JPEG_QUALITY, subsampling=0)
    with Image.open(path) as ref:
        expected = ref.quantization
    for p in (coco_root / "val2017").iterdir():
        with Image.open(p) as im:
            assert im.quantization == expected, p.name
