"""COCO 2017 and CIFAR-100: official archives (download), an existing copy (path), or a generated set (demo)."""

if config["coco"]["source"] == "download":

    # needs the internet: a local job on the submitting host, not on (often offline) cluster nodes
    rule download_coco:
        """Download and unpack COCO 2017 annotations and images (resumable, checksummed, atomic)."""
        output:
            instances=coco_files()["instances"],
            captions=coco_files()["captions"],
            images=directory(coco_files()["images"]),
        log:
            f"{LOGS}/download_coco/{SPLIT}.log",
        localrule: True
        params:
            root=lambda wc, output: str(Path(output.instances).parents[1]),
            split=SPLIT,
            archives={
                k: canon(config["coco"]["archives"][k])
                for k in (SPLIT, "annotations_trainval2017")
            },
            code=step_hash("download_coco"),
        message:
            "Downloading COCO annotations and images"
        script:
            "../workflow_scripts/download_coco.py"


if config["coco"]["source"] == "synthetic":

    rule make_synthetic_coco:
        """Generate the demo's synthetic dataset in genuine COCO 2017 format (deterministic from the seed)."""
        output:
            instances=coco_files()["instances"],
            captions=coco_files()["captions"],
            images=directory(coco_files()["images"]),
        log:
            f"{LOGS}/make_synthetic_coco/{SPLIT}.log",
        params:
            root=lambda wc, output: str(Path(output.instances).parents[1]),
            split=SPLIT,
            seed=config["seed"],
            n_images=config["coco"]["synthetic"]["n_images"],
            image_size=config["coco"]["synthetic"]["image_size"],
            code=step_hash("make_synthetic_coco"),
        message:
            "Generating the synthetic COCO-format demo set"
        script:
            "../workflow_scripts/make_synthetic_coco.py"


if config["cifar100"]["source"] == "download":

    # needs the internet: a local job on the submitting host, not on (often offline) cluster nodes
    rule download_cifar100:
        """Download and unpack the CIFAR-100 python archive (resumable, checksummed, atomic)."""
        output:
            folder=directory(cifar_dir()),
        log:
            f"{LOGS}/download_cifar100/cifar100.log",
        localrule: True
        params:
            root=lambda wc, output: str(Path(output.folder).parent),
            archive=canon(config["cifar100"].get("archive") or {}),
            code=step_hash("download_cifar100"),
        message:
            "Downloading CIFAR-100"
        script:
            "../workflow_scripts/download_cifar100.py"


if config["cifar100"]["source"] == "synthetic":

    rule make_fake_cifar100:
        """Generate a small archive folder in the genuine CIFAR-100 python format (demo; deterministic)."""
        output:
            folder=directory(cifar_dir()),
        log:
            f"{LOGS}/make_fake_cifar100/cifar100.log",
        params:
            root=lambda wc, output: str(Path(output.folder).parent),
            seed=config["seed"],
            synthetic=canon(config["cifar100"].get("synthetic") or {}),
            code=step_hash("make_fake_cifar100"),
        message:
            "Generating the CIFAR-100-format demo archive"
        script:
            "../workflow_scripts/make_fake_cifar100.py"
