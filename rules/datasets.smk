"""Dataset manifests (COCO annotations, CIFAR-100, prompt sets): labels, captions, groups and folds."""


rule build_dataset:
    """Build a balanced, leak-free dataset manifest (rows, labels, captions, folds) from COCO annotations."""
    input:
        instances=ancient(coco_files()["instances"]),
        captions=ancient(coco_files()["captions"]),
        images=ancient(coco_files()["images"]),
    output:
        manifest=layout.manifest(DATA, "{dataset}"),
        meta=layout.manifest_meta(DATA, "{dataset}"),
    log:
        f"{LOGS}/build_dataset/{{dataset}}.log",
    wildcard_constraints:
        dataset=_names("datasets", source="coco"),
    params:
        spec=lambda wc: canon(config["datasets"][wc.dataset]),
        split=SPLIT,
        seed=config["seed"],
        repeats=config["probes"]["settings"]["repeats"],
        code=step_hash("build_dataset"),
    message:
        "Building dataset {wildcards.dataset} from COCO"
    script:
        "../workflow_scripts/build_dataset.py"


rule build_cifar100_dataset:
    """Build a balanced CIFAR-100 manifest (released split kept, folds) and export its images as PNG."""
    input:
        cifar=ancient(cifar_dir()),
    output:
        manifest=f"{DATA}/datasets/{{dataset}}.tsv",
        meta=f"{DATA}/datasets/{{dataset}}.json",
        images=directory(f"{DATA}/datasets/{{dataset}}/images"),
    log:
        f"{LOGS}/build_cifar100_dataset/{{dataset}}.log",
    wildcard_constraints:
        dataset=_names("datasets", source="cifar100"),
    params:
        spec=lambda wc: canon(config["datasets"][wc.dataset]),
        archive=canon(config["cifar100"].get("archive") or {}),
        seed=config["seed"],
        repeats=config["probes"]["settings"]["repeats"],
        code=step_hash("build_cifar100_dataset"),
    message:
        "Building dataset {wildcards.dataset} from CIFAR-100"
    script:
        "../workflow_scripts/build_cifar100_dataset.py"


rule build_imagenet_dataset:
    """Build a balanced ImageNet-1k manifest (seeded per-class draw, unreadable files skipped) from a local copy."""
    input:
        mapping=lambda wc: ancient(T.imagenet_mapping(config)),
    output:
        manifest=f"{DATA}/datasets/{{dataset}}.tsv",
        meta=f"{DATA}/datasets/{{dataset}}.json",
    log:
        f"{LOGS}/build_imagenet_dataset/{{dataset}}.log",
    wildcard_constraints:
        dataset=_names("datasets", source="imagenet"),
    params:
        spec=lambda wc: canon(config["datasets"][wc.dataset]),
        root=config["imagenet"]["root"],
        seed=config["seed"],
        repeats=config["probes"]["settings"]["repeats"],
        code=step_hash("build_imagenet_dataset"),
    message:
        "Building dataset {wildcards.dataset} from ImageNet"
    script:
        "../workflow_scripts/build_imagenet_dataset.py"


rule build_prompt_dataset:
    """Build the manifest of a prompt set (one text row per prompt, stable ids) from the config or a file."""
    input:
        prompts=lambda wc: config["datasets"][wc.dataset].get("prompts_file") or [],
    output:
        manifest=f"{DATA}/datasets/{{dataset}}.tsv",
        meta=f"{DATA}/datasets/{{dataset}}.json",
    log:
        f"{LOGS}/build_prompt_dataset/{{dataset}}.log",
    wildcard_constraints:
        dataset=_names("datasets", source="prompts"),
    params:
        spec=lambda wc: canon(config["datasets"][wc.dataset]),
        seed=config["seed"],
        repeats=config["probes"]["settings"]["repeats"],
        code=step_hash("build_prompt_dataset"),
    message:
        "Building prompt set {wildcards.dataset}"
    script:
        "../workflow_scripts/build_prompt_dataset.py"


rule plot_contact_sheet:
    """A contact sheet of an image dataset (attribute datasets: each base image and its variants) to eyeball."""
    input:
        manifest=f"{DATA}/datasets/{{dataset}}.tsv",
        images=lambda wc: ancient(dataset_images(wc.dataset)),
    output:
        png=report(
            f"{RESULTS}/figs/datasets/{{dataset}}.png",
            caption="../report/contact_sheet.rst",
            category="Datasets",
        ),
    log:
        f"{LOGS}/plot_contact_sheet/{{dataset}}.log",
    wildcard_constraints:
        dataset=_names("datasets", modality="attribute"),
    params:
        n=8,
        code=step_hash("plot_contact_sheet"),
    message:
        "Drawing the contact sheet of {wildcards.dataset}"
    script:
        "../workflow_scripts/plot_contact_sheet.py"
