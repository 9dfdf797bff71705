"""ImageNet-1k source on a generated tree in the ILSVRC-2012 layout: selection, balance, both val layouts,
the missing-layout message, a corrupt JPEG skipped and counted, folds grouped by image."""

import pytest

from repshift.data import sources
from repshift.data.imagenet import ImagenetSpec, build_imagenet_dataset, build_manifest, read_synset_mapping
from repshift.demo.imagenet import make_fake_imagenet
from repshift.formats.manifest import read_manifest


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_fake_imagenet(tmp_path_factory.mktemp("inet") / "imagenet", n_classes=3, n_train=6, n_val=5)


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    return make_fake_imagenet(tmp_path_factory.mktemp("inet") / "imagenet", n_classes=3, val_layout="flat")


def spec(**kw):
    return ImagenetSpec.from_dict("inet", {"source": "imagenet", "modality": "image", **kw})


def test_synset_mapping_names_and_order(folders):
    mapping = read_synset_mapping(folders)
    assert list(mapping)[:2] == ["n01440764", "n01443537"]
    assert mapping["n01440764"] == ["tench", "Tinca tinca"]


@pytest.mark.parametrize("layout", ["folders", "flat"])
def test_val_layouts_give_the_same_labels(layout, folders, flat):
    root = folders if layout == "folders" else flat
    df, meta = build_manifest(spec(classes=["goldfish", "n01440764"], n_per_class=4, folds=2), root, seed=0)
    # classes keep the config's order: goldfish is label 0, tench label 1
    assert meta["label_names"] == ["goldfish", "tench"]
    assert meta["official_label_ids"] == [1, 0]
    assert df.groupby("label_name").size().to_dict() == {"goldfish": 4, "tench": 4}
    assert set(df.loc[df["label"] == 0, "wnid"]) == {"n01443537"}
    # val images 6-10 are goldfish (5 per class, classes in order), whatever the layout
    assert all(6 <= int(f[-13:-5]) <= 10 for f in df.loc[df["label"] == 0, "file"])
    assert (df["split"] == "val").all()


def test_selection_is_seeded_and_balanced(folders):
    kw = {
        "split": "train",
        "classes": ["tench", "goldfish", "great white shark"],
        "n_per_class": 4,
        "folds": 2,
    }
    a, _ = build_manifest(spec(**kw), folders, seed=0)
    b, _ = build_manifest(spec(**kw), folders, seed=0)
    c, _ = build_manifest(spec(**kw), folders, seed=1)
    assert list(a["file"]) == list(b["file"])
    assert list(a["file"]) != list(c["file"])
    assert a.groupby("label").size().tolist() == [4, 4, 4]  # 4 of the 6 train images of each class
    assert a["file"].str.startswith("train/n01").all()


def test_absent_classes_fail_with_the_class_size_message(folders):
    with pytest.raises(ValueError, match=r"tiger shark.*n01491361.*datasets\.inet\.n_per_class"):
        build_manifest(spec(split="train", classes="all", n_per_class=4, folds=2), folders, seed=0)


def test_missing_copy_names_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"LOC_synset_mapping\.txt.*train/<wnid>.*never downloaded"):
        build_manifest(spec(), tmp_path / "nowhere", seed=0)
    (tmp_path / "inet").mkdir()
    (tmp_path / "inet" / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\n")
    (tmp_path / "inet" / "val").mkdir()
    with pytest.raises(FileNotFoundError, match=r"LOC_val_solution\.csv not found"):
        build_manifest(spec(), tmp_path / "inet", seed=0)


def test_corrupt_jpeg_skipped_counted_and_replaced(tmp_path):
    root = make_fake_imagenet(tmp_path / "inet", n_classes=2, n_val=5)
    bad = root / "val" / "n01440764" / "ILSVRC2012_val_00000002.JPEG"
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    df, meta = build_manifest(spec(classes=["tench"], n_per_class=5, folds=2, allow_fewer=True), root, seed=0)
    assert meta["skipped"]["n"] == 1
    assert list(meta["skipped"]["files"]) == ["val/n01440764/ILSVRC2012_val_00000002.JPEG"]
    assert len(df) == 4 and meta["shortfall"] == {"n01440764": 1}
    # asking for 4 draws a replacement: still 4 good ones, the bad one never listed
    df4, meta4 = build_manifest(spec(classes=["tench"], n_per_class=4, folds=2), root, seed=0)
    assert len(df4) == 4 and bad.name not in "".join(df4["file"])


def test_no_image_in_two_folds_and_dispatch_writes_the_manifest(folders, tmp_path):
    s = sources.spec_from_config("inet", {"source": "imagenet", "modality": "image", "split": "train", "folds": 3,
                                          "classes": ["tench", "goldfish", "tiger shark"][:2]})  # fmt: skip
    assert isinstance(s, ImagenetSpec)
    build_imagenet_dataset("inet", s, root=folders, out_tsv=tmp_path / "inet.tsv", seed=0)
    df, meta = read_manifest(tmp_path / "inet.tsv")
    assert len(df) == 12 and df["fold"].nunique() == 3
    assert (df.groupby("group")["fold"].nunique() == 1).all()
    assert df["image_id"].is_unique and meta["image_dir"] == str(folders)


def test_spec_refuses_foreign_keys():
    with pytest.raises(ValueError, match=r"unknown key 'level' for an ImageNet dataset"):
        spec(level="fine")
    with pytest.raises(ValueError, match="image-only"):
        ImagenetSpec.from_dict("inet", {"modality": "text"})
