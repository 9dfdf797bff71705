"""repshift.datasets on a tiny hand-made COCO-format split (real JSON layout, real JPEG/PNG files)."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from repshift.data.coco import CocoFormatError, DatasetSpec, build_manifest, load_coco
from repshift.data.images import (
    ImageLoadError,
    apply_transform,
    contact_sheet,
    load_example_image,
    parse_transform,
    to_rgb,
    validate_images,
)
from repshift.data.sources import build_dataset
from repshift.formats.manifest import (
    CAPTION_SEP,
    MANIFEST_COLUMNS,
    assign_folds,
    read_manifest,
    write_manifest,
)

# --------------------------------------------------------------------------------------------------
# The fixture: a COCO-format split with known contents
# --------------------------------------------------------------------------------------------------

CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 2, "name": "bicycle", "supercategory": "vehicle"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 17, "name": "cat", "supercategory": "animal"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
    {"id": 59, "name": "pizza", "supercategory": "food"},
    {"id": 62, "name": "chair", "supercategory": "furniture"},
]
CAT_ID = {c["name"]: c["id"] for c in CATEGORIES}
COLOURS = {"person": (200, 60, 60), "cat": (60, 200, 60), "dog": (60, 60, 200), "car": (200, 200, 60)}


def _plan() -> tuple[list[tuple[int, list[tuple[str, float]], list[str]]], dict[str, list[int]]]:
    """(image id, [(category, area) per instance], captions) and ids of the special images by role."""
    plan: list[tuple[int, list[tuple[str, float]], list[str]]] = []
    roles: dict[str, list[int]] = {}
    ids = iter(range(1009, 10**6, 7919))  # non-contiguous, not in any meaningful order

    def add(role: str, objs: list[tuple[str, float]], caps: list[str] | None = None) -> None:
        i = next(ids)
        what = " and ".join(sorted({c for c, _ in objs})) or "nothing"
        plan.append(
            (i, objs, caps if caps is not None else [f"{what} photo {i} caption {k}" for k in range(5)])
        )
        roles.setdefault(role, []).append(i)

    for _ in range(8):
        add("cat", [("cat", 100.0)])
        add("dog", [("dog", 100.0), ("dog", 50.0)])
        add("person", [("person", 100.0)])
    for _ in range(6):
        add("car", [("car", 100.0)])
    for _ in range(4):
        add("bicycle", [("bicycle", 100.0)])
        add("pizza", [("pizza", 100.0)])
    add("cat_dog_dog_larger", [("cat", 100.0), ("dog", 300.0)])
    add("cat_dog_dog_larger", [("cat", 10.0), ("dog", 30.0)])
    add("cat_dog_cat_larger", [("cat", 150.0), ("cat", 150.0), ("dog", 250.0)])  # areas add up
    add("cat_dog_cat_larger", [("cat", 500.0), ("dog", 5.0)])
    add("cat_chair", [("cat", 100.0), ("chair", 400.0)])
    add("cat_chair", [("cat", 100.0), ("chair", 400.0)])
    add("no_instances", [])
    add("no_instances", [])
    add("no_instances", [])
    add("cat_no_captions", [("cat", 100.0)], caps=[])
    add("cat_no_captions", [("cat", 100.0)], caps=[])
    add("dog_empty_captions", [("dog", 100.0)], caps=["   ", "\n"])
    add("person_unicode", [("person", 100.0)], caps=[" ", "Un café à Paris — 猫 🐱", "second"])
    add("person_odd_text", [("person", 100.0)], caps=["NA", 'A  man\twith\na "hat"'])
    return plan, roles


PLAN, ROLES = _plan()
N_EMPTY_CAPTIONS = 3  # two in dog_empty_captions, one in person_unicode


def _file(img_id: int) -> str:
    return f"{img_id:012d}.jpg"


def _write_jpeg(path: Path, colour: tuple[int, int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour)[None, None, :] + rng.integers(-30, 30, (20, 24, 3)), 0, 255)
    Image.fromarray(arr.astype(np.uint8)).save(path, format="JPEG", quality=90)


def make_coco(root: Path, order_seed: int = 0, write_images: bool = True) -> tuple[Path, Path]:
    """Write root/val2017/*.jpg and root/annotations/{instances,captions}_val2017.json; JSON order shuffled."""
    image_dir, ann_dir = root / "val2017", root / "annotations"
    image_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    images, instances, captions = [], [], []
    ann_id = 1
    for img_id, objs, caps in PLAN:
        images.append({"id": img_id, "file_name": _file(img_id), "width": 24, "height": 20})
        for cat, area in objs:
            instances.append(
                {
                    "id": ann_id,
                    "image_id": img_id,
                    "category_id": CAT_ID[cat],
                    "area": area,
                    "bbox": [0, 0, 5, 5],
                    "iscrowd": 0,
                    "segmentation": [[0, 0, 5, 0, 5, 5]],
                }
            )
            ann_id += 1
        for k, text in enumerate(caps):
            captions.append({"id": img_id * 10 + k, "image_id": img_id, "caption": text})
        if write_images:
            colour = COLOURS.get(objs[0][0], (128, 128, 128)) if objs else (128, 128, 128)
            _write_jpeg(image_dir / _file(img_id), colour, img_id)
    rng = random.Random(order_seed)
    for items in (images, instances, captions):
        rng.shuffle(items)
    info = {"description": "tiny test split", "version": "1.0", "year": 2017}
    (ann_dir / "instances_val2017.json").write_text(
        json.dumps({"info": info, "images": images, "annotations": instances, "categories": CATEGORIES})
    )
    (ann_dir / "captions_val2017.json").write_text(
        json.dumps(
            {"info": info, "images": list(reversed(images)), "annotations": captions}, ensure_ascii=False
        )
    )
    return ann_dir, image_dir


@pytest.fixture(scope="module")
def coco_dirs(tmp_path_factory) -> tuple[Path, Path]:
    return make_coco(tmp_path_factory.mktemp("coco"))


@pytest.fixture(scope="module")
def coco(coco_dirs):
    return load_coco(coco_dirs[0])


def spec(name: str = "test-set", **kw) -> DatasetSpec:
    d = {"modality": "text", "classes": ["cat", "dog", "person"], "n_per_class": 5, "folds": 3} | kw
    return DatasetSpec.from_dict(name, d)


def build(coco, coco_dirs, seed: int = 0, **kw) -> tuple[pd.DataFrame, dict]:
    return build_manifest(spec(**kw), coco, image_dir=coco_dirs[1], seed=seed)


def categories_of(coco, img_id: int) -> set[str]:
    return {coco.categories[c][0] for c in coco.cat_area.get(img_id, {})}


def assert_no_leak(df: pd.DataFrame, n_folds: int) -> None:
    assert (df.groupby("group")["fold"].nunique() == 1).all()
    assert (df.groupby("image_id")["fold"].nunique() == 1).all()
    assert sorted(df["fold"].unique()) == list(range(n_folds))


# --------------------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------------------


def test_spec_defaults_and_round_trip():
    s = DatasetSpec.from_dict("animals-text", {"modality": "text", "classes": ["cat", "dog"]})
    assert (s.level, s.binary, s.exclusive, s.n_per_class, s.caption, s.folds) == (
        "category",
        False,
        True,
        200,
        "first",
        5,
    )
    assert s.check_images is False and spec(modality="image").check_images is True
    d = s.to_dict()
    assert DatasetSpec.from_dict(d.pop("name"), d) == s
    a = spec(modality="attribute", classes=[], attribute="redness", factors=[0.5, 2])
    assert a.n_base == 200 and a.factors == (0.5, 2.0)
    assert a.label_names == ["redness-0.5", "redness-2"]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"n_per_clas": 5}, "unknown key 'n_per_clas'"),
        ({"modality": "video"}, "modality 'video'"),
        ({"binary": True}, "exactly one class"),
        ({"classes": ["cat"]}, "at least two classes"),
        ({"classes": ["cat", "cat"]}, "'cat' listed twice"),
        ({"factors": [0.5, 1.5]}, "factors only applies to modality: attribute"),
        ({"modality": "paired", "caption": "all"}, "caption: all is not supported for paired"),
        ({"modality": "attribute", "attribute": "brightness", "factors": [1.0]}, "at least two factors"),
        ({"modality": "attribute", "attribute": "glow", "factors": [1, 2]}, "attribute must be one of"),
        ({"modality": "attribute", "attribute": "blur", "factors": [-1, 2]}, "must be >= 0"),
        ({"folds": 1}, "folds must be an integer >= 2"),
        ({"exclusive": "yes"}, "exclusive must be true or false"),
    ],
)
def test_spec_rejects_bad_values(kw, message):
    with pytest.raises(ValueError, match=message):
        spec(**kw)


def test_spec_rejects_bad_name():
    with pytest.raises(ValueError, match="name must match"):
        spec(name="Animals_Text")


# --------------------------------------------------------------------------------------------------
# load_coco
# --------------------------------------------------------------------------------------------------


def test_load_coco_index(coco):
    assert len(coco.files) == len(PLAN)
    assert coco.load_stats["empty_captions"] == N_EMPTY_CAPTIONS
    assert coco.load_stats["images_without_instances"] == 3
    assert coco.load_stats["images_without_captions"] == 3  # two without any, one with only empty ones
    cd = ROLES["cat_dog_cat_larger"][0]
    assert coco.cat_area[cd] == {CAT_ID["cat"]: 300.0, CAT_ID["dog"]: 250.0}
    # captions in annotation-id order whatever the JSON order; whitespace normalised; unicode kept
    i = ROLES["cat"][0]
    assert [t for _, t in coco.captions[i]] == [f"cat photo {i} caption {k}" for k in range(5)]
    u = ROLES["person_unicode"][0]
    assert [t for _, t in coco.captions[u]] == ["Un café à Paris — 猫 🐱", "second"]
    o = ROLES["person_odd_text"][0]
    assert [t for _, t in coco.captions[o]] == ["NA", 'A man with a "hat"']


def _rewrite(ann_dir: Path, which: str, edit) -> None:
    path = ann_dir / f"{which}_val2017.json"
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


@pytest.mark.parametrize(
    ("which", "edit", "message"),
    [
        ("instances", lambda d: d["images"].append(dict(d["images"][0])), "duplicate image id"),
        ("captions", lambda d: d["images"].append(dict(d["images"][3])), "duplicate image id"),
        (
            "instances",
            lambda d: d["annotations"].append(dict(d["annotations"][0])),
            "duplicate annotation id",
        ),
        ("captions", lambda d: d["annotations"].append(dict(d["annotations"][0])), "duplicate annotation id"),
        ("instances", lambda d: d["categories"].append(dict(d["categories"][0])), "duplicate category id"),
        ("captions", lambda d: d["images"][0].update(file_name="other.jpg"), "but 'other.jpg'"),
        ("instances", lambda d: d.pop("categories"), "missing list 'categories'"),
    ],
)
def test_load_coco_rejects_bad_json(tmp_path, which, edit, message):
    ann_dir, _ = make_coco(tmp_path, write_images=False)
    _rewrite(ann_dir, which, edit)
    with pytest.raises(CocoFormatError, match=message) as err:
        load_coco(ann_dir)
    if "duplicate image" in message:
        d = json.loads((ann_dir / f"{which}_val2017.json").read_text())
        dup = [i["id"] for i in d["images"]]
        assert str(max(dup, key=dup.count)) in str(err.value)  # the message names the id


def test_load_coco_missing_and_truncated_json(tmp_path):
    ann_dir, _ = make_coco(tmp_path, write_images=False)
    path = ann_dir / "captions_val2017.json"
    path.write_text(path.read_text()[:500])
    with pytest.raises(CocoFormatError, match="captions_val2017.json: not valid JSON"):
        load_coco(ann_dir)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="captions_val2017.json"):
        load_coco(ann_dir)


def test_load_coco_counts_orphan_annotations(tmp_path):
    ann_dir, _ = make_coco(tmp_path, write_images=False)
    _rewrite(
        ann_dir,
        "instances",
        lambda d: d["annotations"].append(dict(d["annotations"][0], id=10**9, image_id=7)),
    )
    _rewrite(
        ann_dir, "captions", lambda d: d["annotations"].append({"id": 10**9, "image_id": 7, "caption": "x"})
    )
    c = load_coco(ann_dir)
    assert c.load_stats["instances_unknown_image"] == 1 and c.load_stats["captions_unknown_image"] == 1


# --------------------------------------------------------------------------------------------------
# Selection rules
# --------------------------------------------------------------------------------------------------


def test_balanced_counts_and_columns(coco, coco_dirs):
    df, meta = build(coco, coco_dirs)
    assert list(df.columns) == list(MANIFEST_COLUMNS)
    assert len(df) == 15 and df["example_id"].is_unique
    assert df["label"].value_counts().to_dict() == {0: 5, 1: 5, 2: 5}
    assert meta["label_names"] == ["cat", "dog", "person"]
    assert meta["counts"]["per_class"]["cat"] == {"rows": 5, "images": 5}
    assert sum(sum(v.values()) for v in meta["counts"]["per_fold"].values()) == 15
    for row in df.itertuples():
        assert categories_of(coco, row.image_id) & {"cat", "dog", "person"} == {row.label_name}
        assert row.example_id == f"{row.image_id}-c0" and row.group == row.image_id
        assert row.text == coco.captions[row.image_id][0][1]
        assert row.captions == CAPTION_SEP.join(t for _, t in coco.captions[row.image_id])
        assert row.file == _file(row.image_id) and row.modality == "text" and row.transform == ""
    assert meta["skipped"]["no_captions"] == 3  # 2 cats without captions, 1 dog with only empty ones
    assert meta["skipped"]["no_instances"] == 3
    assert meta["config_hash"] and meta["provenance"]["versions"]["repshift"]


def test_deterministic_and_independent_of_json_order(coco, coco_dirs, tmp_path):
    df1, _ = build(coco, coco_dirs, seed=3)
    df2, _ = build(coco, coco_dirs, seed=3)
    pd.testing.assert_frame_equal(df1, df2)
    ann_dir, image_dir = make_coco(tmp_path, order_seed=99, write_images=False)
    df3, _ = build_manifest(spec(), load_coco(ann_dir), image_dir=image_dir, seed=3)
    pd.testing.assert_frame_equal(df1, df3)
    other = {build(coco, coco_dirs, seed=s)[0]["image_id"].tolist().__repr__() for s in range(4)}
    assert len(other) > 1  # the seed matters
    assert df1.equals(df1.sort_values(["label", "group"]).reset_index(drop=True))  # rows sorted


def test_exclusive_rule(coco, coco_dirs):
    df, meta = build(
        coco, coco_dirs, modality="image", classes=["cat", "dog"], n_per_class=100, allow_fewer=True
    )
    mixed = set(ROLES["cat_dog_dog_larger"] + ROLES["cat_dog_cat_larger"])
    assert not mixed & set(df["image_id"])
    assert meta["skipped"]["ambiguous_multiclass"] == 4
    assert set(ROLES["cat_chair"]) <= set(df.loc[df["label_name"] == "cat", "image_id"])  # one target class

    df, meta = build(
        coco,
        coco_dirs,
        modality="image",
        classes=["cat", "dog"],
        n_per_class=100,
        allow_fewer=True,
        exclusive=False,
    )
    label_of = dict(zip(df["image_id"], df["label_name"], strict=True))
    assert all(label_of[i] == "dog" for i in ROLES["cat_dog_dog_larger"])
    assert all(label_of[i] == "cat" for i in ROLES["cat_dog_cat_larger"])  # summed cat area 300 > 250
    assert meta["notes"]["multiclass_by_area"] == 4 and "ambiguous_multiclass" not in meta["skipped"]


def test_binary_task(coco, coco_dirs):
    df, meta = build(coco, coco_dirs, classes=["dog"], binary=True, n_per_class=6)
    assert meta["label_names"] == ["not-dog", "dog"]
    assert df["label"].value_counts().to_dict() == {0: 6, 1: 6}
    for row in df.itertuples():
        has_dog = "dog" in categories_of(coco, row.image_id)
        assert has_dog == (row.label == 1)
        assert categories_of(coco, row.image_id)  # negatives are annotated images, never unannotated ones


def test_supercategory_level(coco, coco_dirs):
    df, meta = build(
        coco,
        coco_dirs,
        modality="image",
        classes=["animal", "vehicle"],
        level="supercategory",
        n_per_class=10,
    )
    assert meta["label_names"] == ["animal", "vehicle"]
    for row in df.itertuples():
        cats = categories_of(coco, row.image_id)
        assert cats & ({"cat", "dog"} if row.label == 0 else {"car", "bicycle"})
    full, _ = build(
        coco,
        coco_dirs,
        modality="image",
        classes=["animal", "vehicle"],
        level="supercategory",
        n_per_class=1000,
        allow_fewer=True,
    )
    vehicles = set(full.loc[full["label"] == 1, "image_id"])
    assert vehicles == set(ROLES["car"] + ROLES["bicycle"])
    assert set(ROLES["cat_dog_dog_larger"]) <= set(
        full.loc[full["label"] == 0, "image_id"]
    )  # one supercategory
    with pytest.raises(ValueError, match="no COCO supercategory named 'cat'"):
        build(coco, coco_dirs, classes=["cat", "dog"], level="supercategory")


def test_allow_fewer(coco, coco_dirs, caplog):
    # text pool: cat 10 (8 + 2 with a chair), dog 8 (one has only empty captions), person 10
    with pytest.raises(ValueError) as err:
        build(coco, coco_dirs, n_per_class=9)
    msg = str(err.value)
    # the dataset, the source and split, the class, usable vs asked, and every way out
    assert "dataset 'test-set': COCO val2017 has only 8 usable images of class 'dog'" in msg
    assert "9 asked (datasets.test-set.n_per_class)" in msg
    assert "lower datasets.test-set.n_per_class to at most 8" in msg
    assert "datasets.test-set.allow_fewer: true" in msg and "coco.split: train2017" in msg
    with caplog.at_level(logging.WARNING, logger="repshift.data.coco"):
        df, meta = build(coco, coco_dirs, n_per_class=9, allow_fewer=True)
    assert df["label_name"].value_counts().to_dict() == {"cat": 9, "person": 9, "dog": 8}
    assert meta["shortfall"] == {"dog": 1}
    assert "only 8 usable images of class 'dog'" in caplog.text


def test_allow_fewer_never_lets_a_class_fall_below_two_images(coco, coco_dirs):
    # every chair image also holds a cat: under the exclusive rule no chair image is usable
    with pytest.raises(ValueError) as err:
        build(coco, coco_dirs, classes=["cat", "chair"], n_per_class=5, allow_fewer=True)
    msg = str(err.value)
    assert "only 0 usable images of class 'chair'" in msg and "5 asked" in msg
    assert "even with allow_fewer: true a class needs at least 2 images" in msg


def test_caption_modes(coco, coco_dirs):
    first, _ = build(coco, coco_dirs)
    every, meta = build(coco, coco_dirs, caption="all")
    assert set(every["image_id"]) == set(first["image_id"])  # n_per_class counts images
    assert meta["counts"]["per_class"]["cat"] == {"rows": 25, "images": 5}
    for img_id, rows in every.groupby("image_id"):
        caps = [t for _, t in coco.captions[img_id]]
        assert rows["text"].tolist() == caps
        assert rows["example_id"].tolist() == [f"{img_id}-c{k}" for k in range(len(caps))]
    r1, _ = build(coco, coco_dirs, caption="random")
    r2, _ = build(coco, coco_dirs, caption="random")
    pd.testing.assert_frame_equal(r1, r2)
    for row in r1.itertuples():
        k = int(row.example_id.rsplit("-c", 1)[1])
        assert row.text == coco.captions[row.image_id][k][1]
    assert (r1["example_id"] != first["example_id"]).any()  # not always the first caption


def test_paired_rows_aligned(coco, coco_dirs):
    df, meta = build(coco, coco_dirs, modality="paired")
    assert list(df.columns) == [*MANIFEST_COLUMNS, "pair_id"]
    assert len(df) == 30 and meta["counts"]["per_modality"] == {"image": 15, "text": 15}
    for pair_id, rows in df.groupby("pair_id"):
        assert sorted(rows["modality"]) == ["image", "text"]
        assert rows["label"].nunique() == rows["fold"].nunique() == rows["group"].nunique() == 1
        assert (rows["image_id"] == pair_id).all()
        img, txt = rows.set_index("modality").loc["image"], rows.set_index("modality").loc["text"]
        assert img["text"] == "" and img["example_id"] == str(pair_id)
        assert txt["text"] == coco.captions[pair_id][0][1]


# --------------------------------------------------------------------------------------------------
# Folds
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"caption": "all"},
        {"modality": "image", "n_per_class": 8},
        {"modality": "paired", "caption": "random"},
        {
            "modality": "attribute",
            "classes": [],
            "attribute": "brightness",
            "factors": [0.5, 1.0, 1.5],
            "n_base": 9,
        },
    ],
    ids=["text-all-captions", "image", "paired", "attribute"],
)
def test_folds_never_leak(coco, coco_dirs, kw):
    df, meta = build(coco, coco_dirs, **kw)
    assert_no_leak(df, 3)
    # stratified: each fold holds every label
    assert all(
        len([v for v in f.values() if v]) == len(meta["label_names"])
        for f in meta["counts"]["per_fold"].values()
    )


def test_assign_folds_deterministic_and_order_free():
    rng = np.random.default_rng(0)
    groups_N = np.repeat(np.arange(40) * 13 + 5, 3)
    labels_N = (groups_N // 13) % 2
    folds_N = assign_folds(labels_N, groups_N, n_folds=4, seed=1)
    np.testing.assert_array_equal(folds_N, assign_folds(labels_N, groups_N, n_folds=4, seed=1))
    perm = rng.permutation(len(groups_N))
    folds_perm = assign_folds(labels_N[perm], groups_N[perm], n_folds=4, seed=1)
    np.testing.assert_array_equal(folds_perm, folds_N[perm])
    assert pd.Series(folds_N).groupby(groups_N).nunique().max() == 1
    assert np.bincount(folds_N).tolist() == [30, 30, 30, 30]
    assert not np.array_equal(folds_N, assign_folds(labels_N, groups_N, n_folds=4, seed=2))
    with pytest.raises(ValueError, match="5 folds requested but only 4 groups"):
        assign_folds([0, 1, 0, 1], [1, 2, 3, 4], n_folds=5, seed=0)


# --------------------------------------------------------------------------------------------------
# Attribute datasets
# --------------------------------------------------------------------------------------------------


def test_attribute_dataset(coco, coco_dirs):
    df, meta = build(
        coco,
        coco_dirs,
        modality="attribute",
        classes=["cat"],
        attribute="redness",
        factors=[0.5, 1.5],
        n_base=6,
    )
    assert len(df) == 12 and meta["label_names"] == ["redness-0.5", "redness-1.5"]
    assert df.groupby("group")["label"].apply(sorted).tolist() == [[0, 1]] * 6
    assert (df["modality"] == "image").all() and (df["text"] == "").all()
    for row in df.itertuples():
        assert "cat" in categories_of(coco, row.image_id)
        factor = ["0.5", "1.5"][row.label]
        assert row.transform == f"redness:{factor}"
        assert row.example_id == f"{row.image_id}-redness-{factor}"
    any_image, _ = build(
        coco, coco_dirs, modality="attribute", classes=[], attribute="rotation", factors=[-15, 15], n_base=50
    )
    assert any_image["group"].nunique() == 50 and "rotation:-15@224" in set(any_image["transform"])


# --------------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------------


def _rgb(rng_seed: int = 0, shape=(9, 11)) -> Image.Image:
    rng = np.random.default_rng(rng_seed)
    return Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), mode="RGB")


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(np.int64)


def test_identity_is_exact():
    img = _rgb()
    out = apply_transform(img, "")
    assert out is not img and out.mode == "RGB"
    np.testing.assert_array_equal(_arr(out), _arr(img))
    for t in ("brightness:1", "redness:1.0", "saturation:1", "contrast:1", "rotation:0", "rotation:360"):
        np.testing.assert_array_equal(_arr(apply_transform(img, t)), _arr(img), err_msg=t)


def test_brightness_scales_all_channels():
    img = Image.fromarray(np.array([[[200, 100, 50], [10, 20, 30]]], dtype=np.uint8))
    np.testing.assert_array_equal(
        _arr(apply_transform(img, "brightness:0.5")), [[[100, 50, 25], [5, 10, 15]]]
    )
    np.testing.assert_array_equal(
        _arr(apply_transform(img, "brightness:1.5")), [[[255, 150, 75], [15, 30, 45]]]
    )
    big = _rgb()
    np.testing.assert_allclose(_arr(apply_transform(big, "brightness:0.5")), _arr(big) * 0.5, atol=0.5)


def test_redness_keeps_luma():
    # redness compensates green and blue so luma stays fixed (tests/unit/data/test_images.py has the details)
    img = _rgb()
    for f in ("0.5", "1.5", "0"):
        out = _arr(apply_transform(img, f"redness:{f}"))
        np.testing.assert_allclose(out @ [0.299, 0.587, 0.114], _arr(img) @ [0.299, 0.587, 0.114], atol=0.5)


def test_saturation_contrast_blur_rotation():
    img = _rgb()
    gray = to_rgb(img.convert("L"))
    # saturation keeps gray pixels, and 0 removes all colour
    np.testing.assert_allclose(_arr(apply_transform(gray, "saturation:2.5")), _arr(gray), atol=1)
    desat = _arr(apply_transform(img, "saturation:0"))
    assert (desat.max(axis=-1) - desat.min(axis=-1)).max() == 0
    # contrast 0 gives a flat image at the mean luma; contrast keeps a flat image flat
    flat = _arr(apply_transform(img, "contrast:0"))
    assert np.unique(flat).size == 1
    np.testing.assert_allclose(flat[0, 0, 0], (_arr(img) @ [0.299, 0.587, 0.114]).mean(), atol=0.5)
    flat_gray = Image.new("RGB", (8, 8), (100, 100, 100))
    np.testing.assert_array_equal(_arr(apply_transform(flat_gray, "contrast:3")), _arr(flat_gray))
    const = Image.new("RGB", (8, 8), (90, 120, 30))
    for t in ("blur:2", "saturation:1"):
        np.testing.assert_allclose(_arr(apply_transform(const, t)), _arr(const), atol=1, err_msg=t)
    # blur smooths but keeps size and mean
    blurred = _arr(apply_transform(img, "blur:1.5"))
    assert blurred.shape == _arr(img).shape and blurred.std() < _arr(img).std() * 0.7
    assert abs(blurred.mean() - _arr(img).mean()) < 5
    # rotation: same size; 90 degrees on a square image is an exact counter-clockwise quarter turn
    sq = _rgb(shape=(10, 10))
    np.testing.assert_array_equal(_arr(apply_transform(sq, "rotation:90")), np.rot90(_arr(sq)))
    assert apply_transform(img, "rotation:30").size == img.size


@pytest.mark.parametrize(
    "bad",
    ["brightness", "brightness:", "brightness:x", "glow:2", "brightness:-1", "blur:nan", "rotation:inf"],
)
def test_bad_transform_strings(bad):
    with pytest.raises(ValueError, match="transform"):
        apply_transform(_rgb(), bad)


def test_parse_transform():
    assert parse_transform("") is None
    assert parse_transform("rotation:-15") == ("rotation", -15.0)
    with pytest.raises(ValueError, match="expects an RGB image"):
        apply_transform(Image.new("L", (2, 2)), "")


# --------------------------------------------------------------------------------------------------
# Loading images: colour modes, in-memory transforms, broken files
# --------------------------------------------------------------------------------------------------


def test_colour_modes_become_rgb(tmp_path):
    gray = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[1, :, 3] = 0, 255, 128
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgba, mode="RGBA").convert("LA").save(tmp_path / "la.png")
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putdata([0, 1])
    pal.save(tmp_path / "pal.png")
    pal.save(tmp_path / "pal_transparent.png", transparency=1)
    Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    Image.fromarray(np.full((3, 3), 65535, dtype=np.uint16)).save(tmp_path / "gray16.png")

    def load(name: str) -> np.ndarray:
        img = load_example_image({"file": name, "transform": ""}, tmp_path)
        assert img.mode == "RGB"
        return _arr(img)

    np.testing.assert_array_equal(load("gray.png"), np.repeat(gray[..., None], 3, axis=-1))
    out = load("rgba.png")
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])  # transparent -> white
    np.testing.assert_array_equal(out[0, 1], [10, 20, 30])  # opaque -> unchanged
    np.testing.assert_allclose(out[1, 0], [132, 137, 142], atol=1)  # half alpha: blended with white
    assert load("la.png")[0, 0].tolist() == [255, 255, 255]
    np.testing.assert_array_equal(load("pal.png")[0], [[255, 0, 0], [0, 0, 255]])
    np.testing.assert_array_equal(load("pal_transparent.png")[0], [[255, 0, 0], [255, 255, 255]])
    np.testing.assert_allclose(load("cmyk.jpg"), 255, atol=2)  # CMYK 0,0,0,0 is white paper
    assert (load("gray16.png") == 255).all()  # 16-bit full scale -> 8-bit full scale


def test_load_example_image_applies_transform_in_memory(coco, coco_dirs):
    df, _ = build(
        coco,
        coco_dirs,
        modality="attribute",
        classes=[],
        attribute="brightness",
        factors=[0.5, 1.5],
        n_base=3,
    )
    _, image_dir = coco_dirs
    for _, row in df.iterrows():
        with Image.open(image_dir / row["file"]) as im:
            raw = im.convert("RGB")
        expected = apply_transform(raw, row["transform"])
        np.testing.assert_array_equal(_arr(load_example_image(row, image_dir)), _arr(expected))
    row = next(df.itertuples(index=False))  # namedtuple rows work too
    assert load_example_image(row, image_dir).size == (24, 20)


def _break_files(image_dir: Path, ids: list[int]) -> dict[str, str]:
    """Truncate, garble, empty and delete real image files; return file -> how it was broken."""
    how = ["truncated", "garbage", "empty", "missing"]
    out = {}
    for img_id, kind in zip(ids, how, strict=False):
        path = image_dir / _file(img_id)
        if kind == "truncated":
            data = path.read_bytes()
            path.write_bytes(data[:-40])  # header intact, entropy-coded data cut short
        elif kind == "garbage":
            path.write_bytes(b"this is not a jpeg" * 20)
        elif kind == "empty":
            path.write_bytes(b"")
        else:
            path.unlink()
        out[path.name] = kind
    return out


@pytest.fixture
def broken_coco(coco_dirs, tmp_path) -> tuple[Path, Path, dict[str, str]]:
    ann_dir, image_dir = coco_dirs
    image_copy = tmp_path / "val2017"
    shutil.copytree(image_dir, image_copy)
    broken = _break_files(image_copy, ROLES["cat"][:3] + ROLES["dog"][:1])
    return ann_dir, image_copy, broken


def test_validate_images_and_loader_errors(broken_coco):
    _, image_dir, broken = broken_coco
    df = pd.DataFrame({"file": sorted(broken) + [_file(ROLES["person"][0])]})
    bad = validate_images(df, image_dir)
    assert set(bad) == set(broken)
    assert bad[next(f for f, k in broken.items() if k == "missing")] == "missing file"
    assert bad[next(f for f, k in broken.items() if k == "empty")] == "empty file"
    assert "truncated" in bad[next(f for f, k in broken.items() if k == "truncated")]
    for name in broken:
        with pytest.raises(ImageLoadError, match=name):
            load_example_image({"file": name, "transform": ""}, image_dir)


def test_builder_skips_and_counts_bad_images(coco, broken_coco):
    _, image_dir, broken = broken_coco
    # 16 images hold a cat and no person; 3 are broken: 13 usable, so all 16 must be visited
    s = spec(modality="image", classes=["cat", "person"], n_per_class=13, allow_fewer=True)
    df, meta = build_manifest(s, coco, image_dir=image_dir, seed=0)
    assert df["label"].value_counts().to_dict() == {0: 13, 1: 10}
    assert meta["shortfall"] == {"person": 3}
    assert not set(broken) & set(df["file"])
    cat_broken = {f for f, k in broken.items() if k != "missing"}  # the first three are cat images
    assert {b["file"] for b in meta["invalid_images"]} == cat_broken
    assert {b["reason"] for b in meta["invalid_images"]} >= {"empty file"}
    assert meta["skipped"]["invalid_image"] == 3
    # the missing dog file makes the dog class one short: an error naming class and count
    with pytest.raises(
        ValueError, match=r"only 8 usable images of class 'dog' \(9 candidates, 1 invalid files\), 9 asked"
    ):
        build_manifest(
            spec(modality="image", classes=["cat", "dog"], n_per_class=9), coco, image_dir=image_dir, seed=0
        )
    # text datasets do not read pixels: no validation unless asked
    df_text, meta_text = build_manifest(
        spec(classes=["cat", "dog"], n_per_class=8), coco, image_dir=image_dir, seed=0
    )
    assert "invalid_image" not in meta_text["skipped"]
    _, meta_val = build_manifest(
        spec(classes=["cat", "dog"], n_per_class=8, allow_fewer=True, validate=True),
        coco,
        image_dir=image_dir,
        seed=0,
    )
    assert meta_val["skipped"]["invalid_image"] >= 1


# --------------------------------------------------------------------------------------------------
# Manifest I/O and contact sheet
# --------------------------------------------------------------------------------------------------


def test_manifest_round_trip(coco, coco_dirs, tmp_path):
    df, meta = build(coco, coco_dirs, modality="paired", classes=["person", "cat"], n_per_class=10)
    texts = set(df["text"])
    assert {"Un café à Paris — 猫 🐱", "NA", ""} <= texts  # unicode, a would-be NaN, image rows
    out = tmp_path / "sub" / "paired.tsv"
    write_manifest(df, meta, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["paired.json", "paired.tsv"]  # no temp files left
    back, meta_back = read_manifest(out)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    for col in ("image_id", "group", "label", "fold", "pair_id"):
        assert back[col].dtype == np.int64
    assert meta_back["label_names"] == meta["label_names"] and meta_back["seed"] == 0
    assert meta_back["columns"] == list(df.columns)
    assert "Un café à Paris" in out.read_text(encoding="utf-8")  # UTF-8, not escaped
    (tmp_path / "sub" / "paired.json").unlink()
    with pytest.raises(FileNotFoundError, match="paired.json"):
        read_manifest(out)


def test_write_manifest_refuses_leaky_frames(coco, coco_dirs, tmp_path):
    df, meta = build(coco, coco_dirs, modality="paired")
    df.loc[df.index[0], "fold"] = (df.loc[df.index[0], "fold"] + 1) % 3
    with pytest.raises(ValueError, match="more than one fold"):
        write_manifest(df, meta, tmp_path / "x.tsv")
    assert not (tmp_path / "x.tsv").exists()


def test_contact_sheet(coco, coco_dirs, tmp_path):
    df, _ = build(
        coco, coco_dirs, modality="attribute", classes=[], attribute="redness", factors=[0.5, 1.5], n_base=4
    )
    out = tmp_path / "sheet.png"
    contact_sheet(df, coco_dirs[1], out, n=3)
    with Image.open(out) as im:
        assert im.mode == "RGB" and im.width > 3 * 128 and im.height > 3 * 128  # 3 rows x (original + 2)
    text_df, _ = build(coco, coco_dirs)
    with pytest.raises(ValueError, match="only text rows"):
        contact_sheet(text_df, coco_dirs[1], tmp_path / "none.png")


def test_build_dataset_end_to_end(coco_dirs, tmp_path):
    ann_dir, image_dir = coco_dirs
    out = tmp_path / "ds" / "animals.tsv"
    df, meta = build_dataset(
        "animals",
        {"modality": "image", "classes": ["cat", "dog", "person"], "n_per_class": 4, "folds": 2},
        annotations_dir=ann_dir,
        image_dir=image_dir,
        out_tsv=out,
        seed=0,
        contact_png=tmp_path / "ds" / "animals.png",
    )
    back, _ = read_manifest(out)
    assert len(back) == 12 and (tmp_path / "ds" / "animals.png").exists()
    assert_no_leak(back, 2)


def test_on_demo_coco_if_available(tmp_path):
    """The demo preset's synthetic COCO set (repshift.demo.coco) goes through the same builder."""
    from repshift.demo import coco as demo_coco

    demo_coco.make_synthetic_coco(tmp_path, n_images=96, seed=0)
    c = load_coco(tmp_path / "annotations")
    for kw in (
        {"modality": "paired", "classes": ["cat", "dog", "person"], "n_per_class": 6},
        {
            "modality": "attribute",
            "classes": [],
            "attribute": "brightness",
            "factors": [0.5, 1.5],
            "n_base": 10,
        },
    ):
        df, meta = build_manifest(
            DatasetSpec.from_dict("demo", kw | {"folds": 3}), c, image_dir=tmp_path / "val2017", seed=0
        )
        assert_no_leak(df, 3)
        assert not meta["invalid_images"]
        assert isinstance(load_example_image(df.iloc[0], tmp_path / "val2017"), Image.Image)


# --------------------------------------------------------------------------------------------------
# Dataset entries of the config, by source (check_config)
# --------------------------------------------------------------------------------------------------

_ROOT = Path(__file__).resolve().parents[3]


def _config(name: str) -> dict:
    import yaml
    from snakemake.utils import validate

    cfg = yaml.safe_load((_ROOT / name).read_text(encoding="utf-8"))
    validate(cfg, str(_ROOT / "rules" / "config.schema.yaml"))
    return cfg


def test_shipped_configs_define_the_datasets_other_stages_use():
    real, demo = _config("config.yaml"), _config("config/demo.yaml")
    for cfg in (real, demo):
        for name in ("prompts-original", "prompts-multilingual"):
            assert (
                cfg["datasets"][name]["source"] == "prompts" and cfg["datasets"][name]["modality"] == "text"
            )
    assert len(real["datasets"]["prompts-original"]["prompts"]) == 5
    assert len(real["datasets"]["prompts-multilingual"]["prompts"]) >= 8
    assert (
        real["datasets"]["cifar100"]["source"] == "cifar100"
        and real["datasets"]["cifar100"]["split"] == "test"
    )
    assert real["datasets"]["cifar100"]["classes"] == "all"
    assert demo["datasets"]["demo-cifar100"]["source"] == "cifar100"
    for name in ("coco-cat", "coco-dog", "coco-person"):
        assert real["datasets"][name]["binary"] is True
    assert real["datasets"]["coco-supercategories"]["level"] == "supercategory"
    # defined, but not built by the main target: no probe task or comparison reads them
    used = {t["dataset"] for t in real["probes"]["tasks"].values()} | {
        c["dataset"] for c in real["comparisons"].values()
    }
    assert not used & {"coco-cat", "coco-dog", "coco-person", "coco-supercategories", "cifar100"}


@pytest.mark.parametrize(
    ("where", "mutate", "needle"),
    [
        (
            "config.yaml",
            lambda c: c["datasets"]["cifar100"].update(classes=["apple", "zebra"]),
            "datasets.cifar100: dataset 'cifar100': 'zebra' is not a CIFAR-100 fine class",
        ),
        (
            "config.yaml",
            lambda c: c["datasets"]["cifar100"].update(classes=["people"]),
            "it is a coarse class",
        ),
        ("config.yaml", lambda c: c["datasets"]["cifar100"].update(caption="first"), "unknown key 'caption'"),
        (
            "config.yaml",
            lambda c: c["datasets"]["cifar100"].update(n_per_class=101),
            "n_per_class 101 but the test split has 100 images per fine class",
        ),
        ("config.yaml", lambda c: c["datasets"]["cifar100"].update(modality="text"), "image-only"),
        ("config.yaml", lambda c: c["cifar100"].pop("archive"), "cifar100.archive is missing"),
        ("config.yaml", lambda c: c["cifar100"].update(source="path"), "cifar100.root is not set"),
        ("config.yaml", lambda c: c["coco"]["archives"].pop("val2017"), "coco.archives.val2017 is missing"),
        ("config.yaml", lambda c: c["datasets"]["coco-cat"].update(split="test"), "unknown key 'split'"),
        (
            "config.yaml",
            lambda c: c["datasets"]["coco-cat"].update(level="fine"),
            "level 'fine' is not one of",
        ),
        (
            "config.yaml",
            lambda c: c["datasets"]["prompts-original"].update(prompts_file="x.txt"),
            "exactly one of `prompts`",
        ),
        (
            "config/demo.yaml",
            lambda c: c["datasets"]["demo-cifar100"].update(classes=["apple", "whale"]),
            "class 'whale' has no image in the synthetic CIFAR-100",
        ),
        (
            "config/demo.yaml",
            lambda c: c["datasets"]["demo-cifar100"].update(n_per_class=11),
            "n_per_class 11 but the test split has 10 images",
        ),
    ],
)
def test_bad_dataset_settings_fail_in_check_config(where, mutate, needle):
    from repshift.config import ConfigError, check_config

    cfg = _config(where)
    check_config(cfg)
    mutate(cfg)
    with pytest.raises(ConfigError, match=needle):
        check_config(cfg)


def test_unknown_source_and_bad_classes_fail_schema_validation():
    import yaml
    from snakemake.utils import validate

    cfg = yaml.safe_load((_ROOT / "config.yaml").read_text(encoding="utf-8"))
    cfg["datasets"]["cifar100"]["source"] = "tiny-imagenet"
    with pytest.raises(Exception, match="tiny-imagenet"):
        validate(cfg, str(_ROOT / "rules" / "config.schema.yaml"))
    cfg["datasets"]["cifar100"]["source"] = "cifar100"
    cfg["datasets"]["cifar100"]["classes"] = "most"
    with pytest.raises(Exception, match="most"):
        validate(cfg, str(_ROOT / "rules" / "config.schema.yaml"))
