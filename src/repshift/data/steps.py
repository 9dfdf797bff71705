"""Rule entry points of the data stage."""

from __future__ import annotations

import logging
from pathlib import Path

from repshift.runtime import step

log = logging.getLogger(__name__)


@step
def download_coco(*, input, output, params, **_):
    """Download, verify and unpack the official COCO 2017 annotations and images.

    ``params["archives"]`` holds the config's ``coco.archives`` entries for ``annotations_trainval2017`` and
    the split (url, size, md5, sha256). Every archive is downloaded and verified before anything is
    extracted, so a failed or mismatching download leaves no extracted folder behind.
    """
    from repshift.data.download import DownloadError, extract_archive, fetch_archive

    root = Path(params["root"])
    split = params["split"]
    archives = params["archives"]
    wanted = (("annotations_trainval2017", "annotations"), (split, split))
    zips = {}
    for key, _members in wanted:
        if key not in archives:
            raise KeyError(f"coco.archives has no entry {key!r} (url and checksums); add it to the config")
        try:
            zips[key] = fetch_archive(archives[key], root / "archives", where=f"coco.archives.{key}")
        except DownloadError as err:
            raise DownloadError(
                f"{err}\nCOCO 2017 archive {key!r} could not be fetched and verified: check coco.archives.{key} "
                "in the config. Without network access, point coco.source: path / coco.root at an existing "
                "copy, or run the offline demo preset (`make demo`)."
            ) from err
    # Snakemake creates the parent folders of the outputs (coco/annotations/) before the job starts: whether an
    # archive still needs unpacking is decided by the files it provides, never by its folder.
    provides = {
        "annotations_trainval2017": (output["instances"], output["captions"]),
        split: (output["images"],),
    }
    for key, members in wanted:
        if not all(_unpacked(Path(p)) for p in provides[key]):
            extract_archive(zips[key], root, members_prefix=f"{members}/")
    for key in ("instances", "captions", "images"):
        if not Path(output[key]).exists():
            raise FileNotFoundError(f"{output[key]} missing after extracting the COCO archives")


def _unpacked(path: Path) -> bool:
    """An extracted file, or a non-empty extracted folder."""
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


@step
def build_dataset(*, input, output, params, wildcards=None, **_):
    """Build one dataset manifest (TSV + JSON sidecar) from the COCO annotations."""
    from repshift.data import sources

    out = _manifest_paths(output)
    sources.build_dataset(
        (wildcards or {}).get("dataset") or out.stem,
        params["spec"],
        annotations_dir=Path(input["instances"]).parent,
        image_dir=input["images"],
        out_tsv=out,
        seed=int(params["seed"]),
        split=params["split"],
    )
    _add_repeats(out, params)


@step
def download_cifar100(*, input, output, params, **_):
    """Download, verify and unpack the official CIFAR-100 python archive."""
    from repshift.data.cifar import fetch_cifar100

    folder = fetch_cifar100(params["root"], params["archive"])
    if Path(folder) != Path(output["folder"]):
        raise ValueError(f"the archive unpacked to {folder}, not to the rule's output {output['folder']}")


def _add_repeats(out: Path, params) -> None:
    """Store every outer-CV repeat's folds in the manifest (``probes.settings.repeats``; 1: ``fold`` only)."""
    from repshift.formats import manifest as formats_manifest

    repeats = int(params.get("repeats", 1))
    if repeats > 1:
        formats_manifest.add_repeat_folds_file(out, repeats=repeats, seed=int(params["seed"]))


def _manifest_paths(output):
    from repshift.formats import manifest as formats_manifest

    out = Path(output["manifest"])
    if Path(output["meta"]) != formats_manifest.sidecar_path(out):
        raise ValueError(f"meta output must be {formats_manifest.sidecar_path(out)}, the manifest's sidecar")
    return out


@step
def build_cifar100_dataset(*, input, output, params, wildcards=None, **_):
    """Build one CIFAR-100 manifest (TSV + JSON sidecar) and export its images as PNG next to it."""
    from repshift.data import cifar as data_cifar

    out = _manifest_paths(output)
    images = Path(output["images"])
    if images.name != "images":
        raise ValueError(f"images output must be a folder named images (export layout), got {images}")
    data_cifar.build_cifar100_dataset(
        (wildcards or {}).get("dataset") or out.stem,
        params["spec"],
        root=input["cifar"],
        out_dir=images.parent,
        out_tsv=out,
        seed=int(params["seed"]),
        archive=params.get("archive") or None,
    )
    _add_repeats(out, params)


@step
def build_prompt_dataset(*, input, output, params, wildcards=None, **_):
    """Build one prompt-set manifest (TSV + JSON sidecar) from inline prompts or a prompts file."""
    from repshift.data import prompts as data_prompts

    out = _manifest_paths(output)
    data_prompts.build_prompt_dataset(
        (wildcards or {}).get("dataset") or out.stem, params["spec"], out_tsv=out, seed=int(params["seed"])
    )
    _add_repeats(out, params)


@step
def build_imagenet_dataset(*, input, output, params, wildcards=None, **_):
    """Build one ImageNet-1k manifest (TSV + JSON sidecar) from the local copy at imagenet.root, read in place."""
    from repshift.data import imagenet as data_imagenet

    out = _manifest_paths(output)
    data_imagenet.build_imagenet_dataset(
        (wildcards or {}).get("dataset") or out.stem,
        params["spec"],
        root=params["root"],
        out_tsv=out,
        seed=int(params["seed"]),
    )
    _add_repeats(out, params)
