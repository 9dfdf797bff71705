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
