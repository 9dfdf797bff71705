"""Dataset manifests built from the COCO annotations: labels, captions, groups and folds."""


rule build_dataset:
    """Build a balanced, leak-free dataset manifest (rows, labels, captions, folds) from COCO annotations."""
    input:
        instances=ancient(coco_files()["instances"]),
        captions=ancient(coco_files()["captions"]),
        images=ancient(coco_files()["images"]),
    output:
        manifest=f"{DATA}/datasets/{{dataset}}.tsv",
        meta=f"{DATA}/datasets/{{dataset}}.json",
    log:
        f"{LOGS}/build_dataset/{{dataset}}.log",
    conda:
        "../envs/data.yaml"
    params:
        spec=lambda wc: canon(config["datasets"][wc.dataset]),
        split=SPLIT,
        seed=config["seed"],
        code=step_hash("build_dataset", "datasets"),
    script:
        "../workflow_scripts/build_dataset.py"


rule plot_contact_sheet:
    """A contact sheet of an image dataset (attribute datasets: each base image and its variants) to eyeball."""
    input:
        manifest=f"{DATA}/datasets/{{dataset}}.tsv",
        images=ancient(coco_files()["images"]),
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
    conda:
        "../envs/data.yaml"
    params:
        n=8,
        code=step_hash("plot_contact_sheet", "datasets"),
    script:
        "../workflow_scripts/plot_contact_sheet.py"
