"""The data-stage rule scripts, run as Snakemake would run them (stand-in ``snakemake`` object), on tiny inputs:
download_coco and download_cifar100 against a real HTTP server on 127.0.0.1 serving genuine-layout archives,
make_fake_cifar100 → build_cifar100_dataset, and build_prompt_dataset."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from loopback_http import serve
from PIL import Image

from repshift.data.cifar import FINE_LABEL_NAMES, read_cifar100
from repshift.data.download import DownloadError
from repshift.data.images import load_example_image
from repshift.demo.cifar import write_cifar_archive_tar
from repshift.demo.coco import make_synthetic_coco
from repshift.formats.manifest import read_manifest


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _zip_tree(root: Path, top: str) -> bytes:
    """A zip of ``root/top`` laid out like the official COCO archives (``top/`` then its files)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{top}/", b"")
        for path in sorted((root / top).rglob("*")):
            zf.write(path, path.relative_to(root).as_posix())
    return buf.getvalue()


@pytest.fixture(scope="module")
def coco_zips(tmp_path_factory):
    """Small genuine COCO-layout archives: val2017.zip (JPEGs) and annotations_trainval2017.zip (JSONs)."""
    src = tmp_path_factory.mktemp("coco-src")
    make_synthetic_coco(src, n_images=12, image_size=32, split="val2017")
    return src, {
        "val2017": _zip_tree(src, "val2017"),
        "annotations_trainval2017": _zip_tree(src, "annotations"),
    }


def _coco_rule(run, root: Path, archives: dict):
    out = {
        "instances": root / "annotations/instances_val2017.json",
        "captions": root / "annotations/captions_val2017.json",
        "images": root / "val2017",
    }
    run(
        "download_coco",
        output=out,
        params={"root": str(root), "split": "val2017", "archives": archives},
        log=root.parent / f"{root.name}.log",
    )
    return out


def _serve_coco(state, base, zips, **override):
    archives = {}
    for key, data in zips.items():
        path = f"/zips/{key}.zip"
        state.files[path] = data
        archives[key] = {"url": base + path, "size": len(data), "md5": _md5(data)} | override.get(key, {})
    return archives


def test_download_coco_fetches_verifies_and_unpacks(run, coco_zips, tmp_path):
    from pycocotools.coco import COCO

    src, zips = coco_zips
    root = tmp_path / "data" / "coco"
    with serve() as (base, state):
        archives = _serve_coco(state, base, zips)
        state.cut_first.add("/zips/val2017.zip")  # the first GET stops halfway: retried (resume: unit tests)
        out = _coco_rule(run, root, archives)
        assert (
            state.count["/zips/val2017.zip"] == 2 and state.count["/zips/annotations_trainval2017.zip"] == 1
        )
    assert sorted(p.name for p in out["images"].iterdir()) == sorted(
        p.name for p in (src / "val2017").iterdir()
    )
    for p in (src / "val2017").iterdir():
        assert (out["images"] / p.name).read_bytes() == p.read_bytes()
    coco = COCO(str(out["instances"]))
    assert (
        len(coco.imgs) == 12
        and Path(out["captions"]).read_bytes() == (src / "annotations/captions_val2017.json").read_bytes()
    )
    assert sorted(p.name for p in (root / "archives").iterdir()) == [
        "annotations_trainval2017.zip",
        "val2017.zip",
    ]
    assert sorted(p.name for p in root.iterdir()) == ["annotations", "archives", "val2017"]  # no temporaries

    # a second run finds the verified archives and the tree: nothing is fetched (the server is gone)
    _coco_rule(run, root, archives)
    assert len(list(out["images"].iterdir())) == 12


def test_download_coco_checksum_mismatch_fails_clearly_and_extracts_nothing(run, coco_zips, tmp_path, capfd):
    _, zips = coco_zips
    root = tmp_path / "coco"
    with serve() as (base, state):
        archives = _serve_coco(state, base, zips, val2017={"md5": "0" * 32})
        with pytest.raises(SystemExit):
            _coco_rule(run, root, archives)
    # what the person sees: one line naming the error (the traceback is in the rule's log)
    msg = capfd.readouterr().err
    assert f"repshift: download_coco failed: {DownloadError.__name__}" in msg and "Traceback" not in msg
    assert "val2017.zip: md5 mismatch: expected 00000000000000000000000000000000" in msg
    assert "coco.archives.val2017" in msg
    # the annotations archive was fine and is kept, but nothing was extracted and no partial file is left
    assert sorted(p.name for p in root.iterdir()) == ["archives"]
    assert sorted(p.name for p in (root / "archives").iterdir()) == ["annotations_trainval2017.zip"]


def test_download_coco_without_a_checksum_is_refused(run, coco_zips, tmp_path, capfd):
    _, zips = coco_zips
    with serve() as (base, state):
        archives = _serve_coco(state, base, zips)
        del archives["val2017"]["md5"]
        with pytest.raises(SystemExit):
            _coco_rule(run, tmp_path / "coco", archives)
    assert "coco.archives.val2017: give the archive's md5 or sha256" in capfd.readouterr().err


def test_download_coco_under_snakemake_unpacks_into_the_folder_snakemake_created(coco_zips, tmp_path):
    """A real ``snakemake`` run: Snakemake makes ``coco/annotations/`` before the job starts, and the step must
    still unpack the annotations archive into it (it used to see the folder and skip extraction)."""
    src, zips = coco_zips
    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / "config/demo.yaml").read_text())
    config["paths"] = {"data": str(tmp_path / "data"), "results": str(tmp_path / "results")}
    with serve() as (base, state):
        config["coco"] = {
            "source": "download",
            "split": "val2017",
            "archives": _serve_coco(state, base, zips),
        }
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        target = tmp_path / "data/coco/annotations/instances_val2017.json"
        bin_dir = Path(sys.executable).parent
        proc = subprocess.run(
            [str(bin_dir / "snakemake"), "-s", str(root / "Snakefile"), "--configfile", "config.yaml"]
            + ["--directory", str(tmp_path), "--cores", "1", str(target)],
            cwd=tmp_path,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
        assert (
            state.count["/zips/annotations_trainval2017.zip"] == 1 and state.count["/zips/val2017.zip"] == 1
        )
    coco_dir = tmp_path / "data/coco"
    for name in ("instances_val2017.json", "captions_val2017.json"):
        assert (coco_dir / "annotations" / name).read_bytes() == (src / "annotations" / name).read_bytes()
    assert sorted(p.name for p in (coco_dir / "val2017").glob("*.jpg")) == sorted(
        p.name for p in (src / "val2017").iterdir()
    )


# ------------------------------------------------------------------------------------------------- CIFAR


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory, run):
    root = tmp_path_factory.mktemp("cifar-data")
    folder = root / "cifar-100-python"
    run(
        "make_fake_cifar100",
        output={"folder": folder},
        params={"root": str(root), "seed": 0, "synthetic": {"n_train": 40, "n_test": 60, "n_classes": 10}},
    )
    return folder


def test_make_fake_cifar100_is_deterministic(run, fake_cifar, tmp_path):
    data = read_cifar100(fake_cifar)
    assert len(data["test"]["filenames"]) == 60 and len(data["train"]["filenames"]) == 40
    assert set(data["test"]["fine_labels_N"].tolist()) == set(range(10))
    again = tmp_path / "cifar-100-python"
    run(
        "make_fake_cifar100",
        output={"folder": again},
        params={
            "root": str(tmp_path),
            "seed": 0,
            "synthetic": {"n_train": 40, "n_test": 60, "n_classes": 10},
        },
    )
    for name in ("train", "test", "meta"):
        assert (again / name).read_bytes() == (fake_cifar / name).read_bytes()


def test_download_cifar100_from_a_local_server(run, fake_cifar, tmp_path):
    tgz = write_cifar_archive_tar(fake_cifar, tmp_path / "src" / "cifar-100-python.tar.gz").read_bytes()
    root = tmp_path / "cifar100"
    with serve() as (base, state):
        state.files["/~kriz/cifar-100-python.tar.gz"] = tgz
        archive = {"url": f"{base}/~kriz/cifar-100-python.tar.gz", "size": len(tgz), "md5": _md5(tgz)}
        run(
            "download_cifar100",
            output={"folder": root / "cifar-100-python"},
            params={"root": str(root), "archive": archive},
            log=tmp_path / "dl.log",
        )
    for name in ("train", "test", "meta"):
        assert (root / "cifar-100-python" / name).read_bytes() == (fake_cifar / name).read_bytes()


def test_build_cifar100_dataset_exports_pngs_and_keeps_the_split(run, fake_cifar, tmp_path):
    classes = ["bee", "apple", "bicycle", "baby"]
    spec = {
        "source": "cifar100",
        "modality": "image",
        "split": "test",
        "classes": classes,
        "n_per_class": 5,
        "folds": 3,
    }
    out = {
        "manifest": tmp_path / "datasets/demo-cifar100.tsv",
        "meta": tmp_path / "datasets/demo-cifar100.json",
        "images": tmp_path / "datasets/demo-cifar100/images",
    }
    archive = {"url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "md5": "0" * 32}
    run(
        "build_cifar100_dataset",
        input={"cifar": str(fake_cifar)},
        output=out,
        params={"spec": spec, "archive": archive, "seed": 0},
        wildcards={"dataset": "demo-cifar100"},
    )
    df, meta = read_manifest(out["manifest"])
    assert len(df) == 20 and (df["split"] == "test").all() and (df["modality"] == "image").all()
    assert meta["label_names"] == classes and meta["source"]["archive"] == archive
    assert df.groupby("label_name").size().to_dict() == dict.fromkeys(classes, 5)
    assert sorted(df["fold"].unique()) == [0, 1, 2]
    raw = read_cifar100(fake_cifar)["test"]
    for row in df.itertuples():  # lossless PNGs: exactly the archive's pixels, under the right label
        assert FINE_LABEL_NAMES[raw["fine_labels_N"][row.image_id]] == row.label_name
        img = load_example_image({"file": row.file, "transform": ""}, out["images"])
        np.testing.assert_array_equal(np.asarray(img), raw["images_NHWC"][row.image_id])
        assert Image.open(out["images"] / row.file).format == "PNG"


# ----------------------------------------------------------------------------------------------- prompts


def test_build_prompt_dataset_from_a_file_round_trips_non_ascii(run, tmp_path):
    prompts = [
        "The quick brown fox jumps over the lazy dog.",
        "Der Fuchs springt über den Hund.",
        "今日はとても良い天気です。",
        "मैं चाय पीता हूँ।",
        "Москва — столица России.",
        'a "quoted"\ttab',
    ]
    path = tmp_path / "prompts.txt"
    path.write_bytes("\ufeff".encode() + "\r\n".join([prompts[0], "", *prompts[1:]]).encode() + b"\n")
    spec = {"source": "prompts", "modality": "text", "prompts_file": str(path)}
    out = {"manifest": tmp_path / "datasets/p.tsv", "meta": tmp_path / "datasets/p.json"}
    run(
        "build_prompt_dataset",
        input={"prompts": str(path)},
        output=out,
        params={"spec": spec, "seed": 0},
        wildcards={"dataset": "p"},
    )
    df, meta = read_manifest(out["manifest"])
    assert df["text"].tolist() == prompts
    assert (df["modality"] == "text").all() and (df["label"] == 0).all() and df["example_id"].is_unique
    assert (
        df["fold"].nunique() == 5 and meta["skipped"] == {"blank_lines": 1} and meta["non_ascii_prompts"] == 4
    )
    assert meta["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
