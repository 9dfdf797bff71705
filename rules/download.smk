"""COCO 2017: official archives (download), an existing copy (path), or the demo's synthetic set."""

if config["coco"]["source"] == "download":

    rule download_coco:
        """Download and unpack COCO 2017 annotations and images (resumable, checksummed, atomic)."""
        output:
            instances=coco_files()["instances"],
            captions=coco_files()["captions"],
            images=directory(coco_files()["images"]),
        log:
            f"{LOGS}/download_coco/{SPLIT}.log",
        conda:
            "../envs/data.yaml"
        params:
            root=lambda wc, output: str(Path(output.instances).parents[1]),
            split=SPLIT,
            code=step_hash("download_coco", "download"),
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
        conda:
            "../envs/data.yaml"
        params:
            root=lambda wc, output: str(Path(output.instances).parents[1]),
            split=SPLIT,
            seed=config["seed"],
            n_images=config["coco"]["synthetic"]["n_images"],
            image_size=config["coco"]["synthetic"]["image_size"],
            code=step_hash("make_synthetic_coco", "demo_coco"),
        script:
            "../workflow_scripts/make_synthetic_coco.py"
