"""repshift.cifar on small archives in the genuine CIFAR-100 python format (offline, a few seconds)."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from loopback_http import serve
from PIL import Image

from repshift.data.cifar import (
    CIFAR_MANIFEST_COLUMNS,
    COARSE_LABEL_NAMES,
    COARSE_OF_FINE,
    FINE_LABEL_NAMES,
    CifarFormatError,
    CifarSpec,
    _select,
    build_cifar100_dataset,
    export_cifar100,
    fetch_cifar100,
    read_cifar100,
)
from repshift.data.download import DownloadError, extract_archive
from repshift.data.images import load_example_image
from repshift.demo.cifar import make_fake_cifar100, write_cifar_archive_tar
from repshift.formats.manifest import check_manifest, read_manifest, write_manifest


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


N_TRAIN, N_TEST = 1000, 500  # 10 and 5 images per fine class; 50 and 25 per coarse class


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> Path:
    return make_fake_cifar100(tmp_path_factory.mktemp("cifar"), n_train=N_TRAIN, n_test=N_TEST, seed=0)


def _raw(path: Path) -> dict:
    """The test's own reading of a pickle (our fixture files), independent of read_cifar100."""
    with path.open("rb") as f:
        return pickle.load(f, encoding="bytes")


def _copy(fake: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "cifar-100-python"
    shutil.copytree(fake, dest)
    return dest


def _dump(obj, path: Path) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


# --------------------------------------------------------------------------------------------------
# Format
# --------------------------------------------------------------------------------------------------


def test_class_names_and_superclasses():
    assert len(FINE_LABEL_NAMES) == 100 and len(set(FINE_LABEL_NAMES)) == 100
    assert len(COARSE_LABEL_NAMES) == 20
    assert FINE_LABEL_NAMES[:3] == ("apple", "aquarium_fish", "baby") and FINE_LABEL_NAMES[-1] == "worm"
    assert COARSE_LABEL_NAMES[0] == "aquatic_mammals" and COARSE_LABEL_NAMES[-1] == "vehicles_2"
    assert np.bincount(COARSE_OF_FINE, minlength=20).tolist() == [5] * 20
    assert COARSE_LABEL_NAMES[COARSE_OF_FINE[FINE_LABEL_NAMES.index("whale")]] == "aquatic_mammals"


def test_fake_is_in_the_genuine_format(fake):
    assert sorted(p.name for p in fake.iterdir()) == ["meta", "test", "train"]
    meta = _raw(fake / "meta")
    assert set(meta) == {b"fine_label_names", b"coarse_label_names"}
    assert [n.decode() for n in meta[b"fine_label_names"]] == list(FINE_LABEL_NAMES)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        raw = _raw(fake / split)
        assert set(raw) == {b"data", b"fine_labels", b"coarse_labels", b"filenames", b"batch_label"}
        assert raw[b"data"].dtype == np.uint8 and raw[b"data"].shape == (n, 3072)
        assert all(type(x) is int for x in raw[b"fine_labels"] + raw[b"coarse_labels"])
        assert all(isinstance(x, bytes) for x in raw[b"filenames"])
        assert [COARSE_OF_FINE[k] for k in raw[b"fine_labels"]] == raw[b"coarse_labels"]
    # Python 2 style: byte strings as BINSTRING opcodes, numpy under its numpy.core name
    blob = (fake / "test").read_bytes()
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in blob and b"_codecs" not in blob
    with (fake / "test").open("rb") as f:
        assert isinstance(next(iter(pickle.load(f, encoding="latin-1"))), str)  # py2 str, not py3 bytes


def test_fake_is_deterministic(tmp_path, fake):
    again = make_fake_cifar100(tmp_path, n_train=N_TRAIN, n_test=N_TEST, seed=0)
    for name in ("train", "test", "meta"):
        assert (again / name).read_bytes() == (fake / name).read_bytes()


def test_pixel_layout_is_r_then_g_then_b_planes_row_major(tmp_path):
    """A hand-built file (Python 3 pickle) with known planes: R = 255, G = 8 * row, B = 8 * column."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rows, cols = np.mgrid[0:32, 0:32]
    image = np.concatenate([np.full(1024, 255), (8 * rows).ravel(), (8 * cols).ravel()]).astype(np.uint8)
    data = np.stack([image, 255 - image, image, 255 - image])
    for split in ("train", "test"):
        _dump(
            {
                b"data": data,
                b"fine_labels": [3, 99, 3, 99],
                b"coarse_labels": [COARSE_OF_FINE[k] for k in (3, 99, 3, 99)],
                b"filenames": [b"a.png", b"b.png", b"c.png", b"d.png"],
            },
            folder / split,
        )
    _dump(
        {
            b"fine_label_names": [n.encode() for n in FINE_LABEL_NAMES],
            b"coarse_label_names": [n.encode() for n in COARSE_LABEL_NAMES],
        },
        folder / "meta",
    )
    d = read_cifar100(folder)  # the folder itself or its parent
    assert read_cifar100(tmp_path)["folder"] == folder
    img = d["train"]["images_NHWC"][0]
    assert img.shape == (32, 32, 3)
    assert (img[..., 0] == 255).all()
    np.testing.assert_array_equal(img[..., 1], 8 * rows)
    np.testing.assert_array_equal(img[..., 2], 8 * cols)
    np.testing.assert_array_equal(d["test"]["images_NHWC"][1], 255 - img)
    assert d["train"]["filenames"] == ["a.png", "b.png", "c.png", "d.png"]

    df, _ = export_cifar100(folder, tmp_path / "out", split="test", label_level="fine", seed=0, folds=2)
    assert df["label_name"].tolist() == ["bear", "bear", "worm", "worm"]
    assert df["image_id"].tolist() == [0, 2, 1, 3]
    with Image.open(tmp_path / "out" / "images" / "test" / "0.png") as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (32, 32)
        assert im.getpixel((5, 2)) == (255, 16, 40)  # (x=5, y=2): G = 8 * row 2, B = 8 * column 5


# --------------------------------------------------------------------------------------------------
# Archive round trip and export
# --------------------------------------------------------------------------------------------------


def test_tar_gz_round_trip_through_extract_read_export(tmp_path, fake):
    tgz = write_cifar_archive_tar(fake, tmp_path / "cifar-100-python.tar.gz")
    with tarfile.open(tgz) as tf:
        assert tf.getnames() == [
            "cifar-100-python",
            "cifar-100-python/meta",
            "cifar-100-python/test",
            "cifar-100-python/train",
        ]
    assert write_cifar_archive_tar(fake, tmp_path / "again.tar.gz").read_bytes() == tgz.read_bytes()

    extract_archive(tgz, tmp_path / "data")
    got = read_cifar100(tmp_path / "data")
    want = read_cifar100(fake)
    assert got["fine_label_names"] == list(FINE_LABEL_NAMES)
    assert got["coarse_label_names"] == list(COARSE_LABEL_NAMES)
    assert got["coarse_of_fine"] == list(COARSE_OF_FINE)
    for split in ("train", "test"):
        for key in ("images_NHWC", "fine_labels_N", "coarse_labels_N"):
            np.testing.assert_array_equal(got[split][key], want[split][key])

    out = tmp_path / "export"
    df, meta = export_cifar100(tmp_path / "data", out, split="test", label_level="fine", seed=0)
    assert list(df.columns) == list(CIFAR_MANIFEST_COLUMNS)
    assert len(df) == N_TEST and sorted(df["image_id"]) == list(range(N_TEST))
    raw = _raw(tmp_path / "data" / "cifar-100-python" / "test")
    image_dir = Path(meta["image_dir"])
    assert image_dir == out / "images"
    for row in df.itertuples():
        i = row.image_id
        assert row.example_id == f"test-{i}" and row.group == i and row.file == f"test/{i}.png"
        assert (row.modality, row.text, row.captions, row.transform, row.split) == (
            "image",
            "",
            "",
            "",
            "test",
        )
        assert row.label == raw[b"fine_labels"][i]
        assert row.label_name == FINE_LABEL_NAMES[row.label]
        assert raw[b"filenames"][i].decode().startswith(row.label_name + "_s_")
        pixels = np.asarray(load_example_image(df.loc[row.Index], image_dir))
        # independent of the reader: channel c, row y, column x is byte c * 1024 + y * 32 + x of the row
        np.testing.assert_array_equal(pixels, raw[b"data"][i].reshape(3, 32, 32).transpose(1, 2, 0))
    assert sorted(os.listdir(image_dir / "test")) == sorted(f"{i}.png" for i in range(N_TEST))
    assert meta["split"] == "test" and meta["label_level"] == "fine"
    assert meta["label_names"] == list(FINE_LABEL_NAMES)
    assert meta["source"]["archive"] is None  # no archive given: a folder used in place
    assert set(meta["source"]["files"]) == {"meta", "test"}
    assert meta["counts"]["per_class"]["apple"] == {"rows": 5, "images": 5}
    assert {"created", "versions", "config_hash"} <= set(meta["provenance"])


def test_balanced_sampling_is_deterministic_and_balanced(tmp_path, fake):
    def run(seed, out):
        return export_cifar100(
            fake, tmp_path / out, split="train", label_level="fine", n_per_class=5, seed=seed
        )[0]

    a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    pd.testing.assert_frame_equal(a, b)
    for i in a["image_id"]:
        assert (tmp_path / "a/images/train" / f"{i}.png").read_bytes() == (
            tmp_path / "b/images/train" / f"{i}.png"
        ).read_bytes()
    assert set(a["image_id"]) != set(c["image_id"])
    raw = _raw(fake / "train")
    for df in (a, c):
        assert df["label"].value_counts().to_dict() == dict.fromkeys(range(100), 5)
        assert all(raw[b"fine_labels"][i] == k for i, k in zip(df["image_id"], df["label"], strict=True))
        assert df.equals(df.sort_values(["label", "image_id"]).reset_index(drop=True))
    # only the chosen images are written, and a second export of the split replaces the first
    run(1, "a")
    assert len(os.listdir(tmp_path / "a/images/train")) == 500


def test_fine_and_coarse_levels(tmp_path, fake):
    fine, fmeta = export_cifar100(fake, tmp_path / "f", split="train", label_level="fine", seed=0)
    coarse, cmeta = export_cifar100(
        fake, tmp_path / "c", split="train", label_level="coarse", n_per_class=10, seed=0
    )
    assert len(fine) == N_TRAIN and fine["label"].nunique() == 100
    assert cmeta["label_names"] == list(COARSE_LABEL_NAMES) and len(fmeta["label_names"]) == 100
    assert coarse["label"].value_counts().to_dict() == dict.fromkeys(range(20), 10)
    fine_of = dict(zip(fine["image_id"], fine["label"], strict=True))
    for i, k, name in zip(coarse["image_id"], coarse["label"], coarse["label_name"], strict=True):
        assert COARSE_OF_FINE[fine_of[i]] == k and COARSE_LABEL_NAMES[k] == name


def test_too_few_images_is_an_error_unless_allowed(tmp_path, fake):
    with pytest.raises(
        ValueError, match=r"CIFAR-100 test has only 5 usable images of class 'apple', 6 asked"
    ):
        export_cifar100(fake, tmp_path / "x", split="test", n_per_class=6, seed=0)
    df, meta = export_cifar100(fake, tmp_path / "y", split="test", n_per_class=6, seed=0, allow_fewer=True)
    assert len(df) == N_TEST and meta["shortfall"] == dict.fromkeys(FINE_LABEL_NAMES, 1)
    with pytest.raises(ValueError, match=r"even with allow_fewer: true a class needs at least 2 images"):
        _select(np.array([0, 1, 1]), ["apple", "bee"], 2, 0, True, "tiny", "CIFAR-100 test")
    with pytest.raises(ValueError, match=r"at most 3 images per class, fewer than folds=5"):
        export_cifar100(fake, tmp_path / "w", split="test", n_per_class=3, seed=0)
    with pytest.raises(ValueError, match="split must be one of"):
        export_cifar100(fake, tmp_path / "z", split="val", seed=0)
    with pytest.raises(ValueError, match="label_level"):
        export_cifar100(fake, tmp_path / "z", split="test", label_level="superclass", seed=0)


def test_folds_never_split_a_group_and_are_stratified(tmp_path, fake):
    df, meta = export_cifar100(fake, tmp_path / "o", split="train", label_level="coarse", seed=3, folds=5)
    assert df.groupby("group")["fold"].nunique().max() == 1
    assert sorted(df["fold"].unique()) == [0, 1, 2, 3, 4]
    per = pd.crosstab(df["label"], df["fold"])
    assert (per.to_numpy() == 10).all()  # 50 images of each coarse class: 10 per fold
    assert meta["counts"]["per_fold"]["0"]["people"] == 10
    again, _ = export_cifar100(fake, tmp_path / "p", split="train", label_level="coarse", seed=3, folds=5)
    np.testing.assert_array_equal(again["fold"], df["fold"])


def test_manifest_passes_checks_and_round_trips(tmp_path, fake):
    df, meta = export_cifar100(fake, tmp_path / "o", split="train", n_per_class=5, seed=0)
    check_manifest(df)
    write_manifest(df, meta, tmp_path / "cifar.tsv")
    back, back_meta = read_manifest(tmp_path / "cifar.tsv")
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    for col in ("image_id", "group", "label", "fold"):
        assert back[col].dtype == np.int64
    assert back["split"].tolist() == ["train"] * len(df) and (back["text"] == "").all()
    assert back_meta["columns"] == list(CIFAR_MANIFEST_COLUMNS)
    assert back_meta["label_names"] == list(FINE_LABEL_NAMES)


def test_build_dataset_from_a_config_entry(tmp_path, fake):
    tsv = tmp_path / "datasets" / "cifar-coarse.tsv"
    spec = {"source": "cifar100", "modality": "image", "split": "test", "level": "coarse", "n_per_class": 5}
    df, meta = build_cifar100_dataset(
        "cifar-coarse",
        spec,
        root=fake.parent,
        out_dir=tmp_path / "datasets" / "cifar-coarse",
        out_tsv=tsv,
        seed=0,
    )
    back, side = read_manifest(tsv)
    assert len(back) == 100 and side["dataset"] == "cifar-coarse" and side["spec"]["n_per_class"] == 5
    assert (tmp_path / "datasets/cifar-coarse/images/test").is_dir()
    with pytest.raises(ValueError, match="unknown key 'caption'"):
        CifarSpec.from_dict("x", {"caption": "first"})
    with pytest.raises(ValueError, match="'zebra' is not a CIFAR-100 fine class"):
        CifarSpec.from_dict("x", {"classes": ["apple", "zebra"]})
    with pytest.raises(ValueError, match="'people' is not a CIFAR-100 fine class; it is a coarse class"):
        CifarSpec.from_dict("x", {"classes": ["people"]})
    with pytest.raises(ValueError, match="'apple' listed twice"):
        CifarSpec.from_dict("x", {"classes": ["apple", "apple"]})
    with pytest.raises(ValueError, match="`all` or a list"):
        CifarSpec.from_dict("x", {"classes": "apple"})
    with pytest.raises(ValueError, match="source must be cifar100"):
        CifarSpec.from_dict("x", {"source": "coco"})
    assert CifarSpec.from_dict("x", {"classes": "all"}).label_names == list(FINE_LABEL_NAMES)
    with pytest.raises(ValueError, match="level must be one of"):
        CifarSpec.from_dict("x", {"level": "category"})
    with pytest.raises(ValueError, match="image-only"):
        CifarSpec.from_dict("x", {"modality": "text"})
    with pytest.raises(ValueError, match="n_per_class"):
        CifarSpec.from_dict("x", {"n_per_class": 0})


def test_a_class_subset_gets_labels_in_the_given_order(tmp_path, fake):
    classes = ["bee", "apple", "whale"]
    df, meta = export_cifar100(
        fake, tmp_path / "o", split="train", n_per_class=6, seed=0, folds=3, classes=classes
    )
    assert meta["label_names"] == classes
    assert meta["official_label_ids"] == [FINE_LABEL_NAMES.index(c) for c in classes]
    assert df.groupby("label")["label_name"].first().tolist() == classes
    raw = _raw(fake / "train")
    for row in df.itertuples():  # the official label of every exported image is the class it is filed under
        assert FINE_LABEL_NAMES[raw[b"fine_labels"][row.image_id]] == row.label_name
    assert df["label"].value_counts().tolist() == [6, 6, 6]
    with pytest.raises(ValueError, match="'zebra' is not a CIFAR-100 fine class"):
        export_cifar100(fake, tmp_path / "q", split="train", n_per_class=4, seed=0, classes=["zebra"])


def test_fetch_downloads_verifies_and_extracts_from_a_local_server(tmp_path, fake):
    tgz = write_cifar_archive_tar(fake, tmp_path / "src.tar.gz")
    data = tgz.read_bytes()
    with serve() as (base, state):
        state.files["/~kriz/cifar-100-python.tar.gz"] = data
        archive = {"url": f"{base}/~kriz/cifar-100-python.tar.gz", "size": len(data), "md5": _md5(data)}
        folder = fetch_cifar100(tmp_path / "root", archive)
        assert folder == tmp_path / "root" / "cifar-100-python"
        assert (tmp_path / "root/archives/cifar-100-python.tar.gz").read_bytes() == data
        assert len(read_cifar100(folder)["test"]["filenames"]) == N_TEST
        with pytest.raises(DownloadError, match="md5 mismatch"):
            fetch_cifar100(tmp_path / "other", archive | {"md5": "0" * 32})
    assert not (tmp_path / "other" / "cifar-100-python").exists()


# --------------------------------------------------------------------------------------------------
# Malformed files
# --------------------------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit(path: Path, change) -> None:
    obj = _raw(path)
    change(obj)
    _dump(obj, path)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


CORRUPTIONS = {
    "truncated": ("train", _truncate, "cannot unpickle"),
    "garbage": ("train", lambda p: p.write_bytes(b"not a pickle at all"), "cannot unpickle"),
    "empty": ("test", lambda p: p.write_bytes(b""), "cannot unpickle"),
    "not-a-dict": ("test", lambda p: _dump([1, 2], p), "expected a dict"),
    "missing-key": (
        "train",
        lambda p: _edit(p, lambda o: o.pop(b"fine_labels")),
        "missing key 'fine_labels'",
    ),
    "wrong-shape": (
        "train",
        lambda p: _edit(p, lambda o: o.update({b"data": o[b"data"][:, :3000]})),
        "shape",
    ),
    "wrong-dtype": (
        "test",
        lambda p: _edit(p, lambda o: o.update({b"data": o[b"data"].astype(np.float32)})),
        "must be uint8",
    ),
    "label-range": (
        "test",
        lambda p: _edit(p, lambda o: o[b"fine_labels"].__setitem__(7, 100)),
        r"fine_labels\[7\] = 100 is outside 0..99",
    ),
    "label-count": (
        "test",
        lambda p: _edit(p, lambda o: o[b"coarse_labels"].pop()),
        r"coarse_labels has shape \(499,\), expected \(500,\)",
    ),
    "filenames": (
        "test",
        lambda p: _edit(p, lambda o: o[b"filenames"].pop()),
        "499 filenames for 500 images",
    ),
    "cifar10-meta": (
        "meta",
        lambda p: _edit(p, lambda o: o.update({b"fine_label_names": o[b"fine_label_names"][:10]})),
        "has 10 names",
    ),
    "duplicate-name": (
        "meta",
        lambda p: _edit(p, lambda o: o[b"coarse_label_names"].__setitem__(1, b"people")),
        "lists 'people' twice",
    ),
    "two-superclasses": (
        "train",
        lambda p: _edit(p, lambda o: o[b"coarse_labels"].__setitem__(0, (o[b"coarse_labels"][0] + 1) % 20)),
        "more than one coarse class",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_malformed_files_raise_naming_the_file(tmp_path, fake, case):
    name, corrupt, message = CORRUPTIONS[case]
    folder = _copy(fake, tmp_path)
    corrupt(folder / name)
    with pytest.raises(CifarFormatError, match=message) as err:
        read_cifar100(folder)
    assert str(folder / name) in str(err.value)


def test_unexpected_globals_are_refused_not_run(tmp_path, fake):
    folder = _copy(fake, tmp_path)
    marker = tmp_path / "pwned"
    _dump({b"data": _Evil(marker)}, folder / "test")
    with pytest.raises(CifarFormatError, match=r"refusing to load posix\.mkdir") as err:
        read_cifar100(folder)
    assert str(folder / "test") in str(err.value) and not marker.exists()


def test_missing_files_are_named(tmp_path, fake):
    folder = _copy(fake, tmp_path)
    (folder / "train").unlink()
    with pytest.raises(FileNotFoundError, match="train"):
        read_cifar100(folder)
    assert len(read_cifar100(folder, splits=("test",))["test"]["filenames"]) == N_TEST
    with pytest.raises(FileNotFoundError, match="CIFAR-100 folder not found"):
        read_cifar100(tmp_path / "nowhere")
