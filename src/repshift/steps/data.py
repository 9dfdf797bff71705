"""Steps of the data stage: COCO download, the demo's synthetic COCO set, dataset manifests."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from repshift.steps._base import step

log = logging.getLogger(__name__)


@step
def make_synthetic_coco(*, input, output, params, **_):
    """Generate the demo's synthetic COCO 2017-format dataset (images + instances + captions JSON)."""
    from repshift.demo_coco import make_synthetic_coco as make

    root = Path(params["root"])
    split = params["split"]
    staging = root.parent / f".{root.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    summary = make(
        staging,
        n_images=params["n_images"],
        seed=params["seed"],
        image_size=params["image_size"],
        split=split,
    )
    for key, src in (
        ("instances", f"annotations/instances_{split}.json"),
        ("captions", f"annotations/captions_{split}.json"),
    ):
        dest = Path(output[key])
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staging / src, dest)
    images = Path(output["images"])
    if images.exists():
        shutil.rmtree(images)
    shutil.move(staging / split, images)
    shutil.rmtree(staging, ignore_errors=True)
    log.info("synthetic COCO: %s", summary)


@step
def download_coco(*, input, output, params, **_):
    """Download, verify and unpack the official COCO 2017 annotations and images."""
    from repshift.download import COCO_CHECKSUMS, COCO_URLS, DownloadError, download, extract_archive

    root = Path(params["root"])
    split = params["split"]
    archives = root / "archives"
    for key, members in (("annotations_trainval2017", "annotations"), (split, split)):
        url = COCO_URLS[key]
        check = COCO_CHECKSUMS.get(key, {})
        try:
            zip_path = download(url, archives / Path(url).name, size=check.get("size"), md5=check.get("md5"))
        except DownloadError as err:
            raise DownloadError(
                f"{err}\nCOCO 2017 could not be downloaded from {url}. Without network access, point "
                "coco.source: path / coco.root at an existing copy, or run the offline demo preset (`make demo`)."
            ) from err
        target = root / members
        if not target.exists():
            extract_archive(zip_path, root, members_prefix=members)
    for key in ("instances", "captions", "images"):
        if not Path(output[key]).exists():
            raise FileNotFoundError(f"{output[key]} missing after extracting the COCO archives")


@step
def build_dataset(*, input, output, params, wildcards=None, **_):
    """Build one dataset manifest (TSV + JSON sidecar) from the COCO annotations."""
    from repshift import datasets

    out = Path(output["manifest"])
    if Path(output["meta"]) != datasets.sidecar_path(out):
        raise ValueError(f"meta output must be {datasets.sidecar_path(out)}, the manifest's sidecar")
    datasets.build_dataset(
        (wildcards or {}).get("dataset") or out.stem,
        params["spec"],
        annotations_dir=Path(input["instances"]).parent,
        image_dir=input["images"],
        out_tsv=out,
        seed=int(params["seed"]),
        split=params["split"],
    )
