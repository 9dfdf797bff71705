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
    from repshift.data.download import fetch_and_unpack

    split = params["split"]
    # Snakemake creates the parent folders of the outputs (coco/annotations/) before the job starts: whether an
    # archive still needs unpacking is decided by the files it provides, never by its folder.
    wanted = {
        "annotations_trainval2017": ("annotations/", (output["instances"], output["captions"])),
        split: (f"{split}/", (output["images"],)),
    }
    hint = (
        "COCO 2017 archive {key!r} could not be fetched and verified: check coco.archives.{key} in the config. "
        "Without network access, point coco.source: path / coco.root at an existing copy, or run the offline demo "
        "preset (`make demo`)."
    )
    fetch_and_unpack(params["archives"], wanted, Path(params["root"]), section="coco.archives", hint=hint)


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
