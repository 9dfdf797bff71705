"""Demo models and activation extraction: one job per (model, dataset) writes every layer's HDF5 file."""


rule make_demo_model:
    """Generate a tiny random-weight model of a real architecture (demo preset), saved with save_pretrained."""
    input:
        base=lambda wc: model_dir(config["models"][wc.model]["demo"].get("base"))
        if config["models"][wc.model]["demo"].get("base")
        else [],
    output:
        model=directory(f"{DATA}/models/{{model}}"),
    log:
        f"{LOGS}/make_demo_model/{{model}}.log",
    params:
        spec=lambda wc: config["models"][wc.model],
        seed=config["seed"],
        code=code_hash("demo_models"),
    wildcard_constraints:
        model=_names("models", source="demo"),
    script:
        "../workflow_scripts/make_demo_model.py"


rule extract_activations:
    """Read every configured layer (output of block L) of one model on one dataset, one forward per batch."""
    input:
        manifest=lambda wc: manifest(wc.dataset),
        model=lambda wc: model_dir(wc.model),
        images=ancient(coco_files()["images"]),
    output:
        acts=directory(f"{RESULTS}/activations/{{model}}/{{dataset}}"),
    log:
        f"{LOGS}/extract_activations/{{model}}/{{dataset}}.log",
    benchmark:
        f"{BENCH}/extract_activations/{{model}}/{{dataset}}.tsv"
    threads: 2
    params:
        spec=lambda wc: config["models"][wc.model],
        layers=lambda wc: rcfg.model_layers(config, wc.model),
        tokens=lambda wc: rcfg.needs_tokens(config, wc.model, wc.dataset),
        extraction=config["extraction"],
        data_dir=DATA,
        image_dir=coco_files()["images"],
        code=code_hash("extract", "models", "h5io", "datasets"),
    script:
        "../workflow_scripts/extract_activations.py"
