"""Demo models and activation extraction: one job per (model, dataset) writes every layer's HDF5 file."""


rule make_demo_model:
    """Generate a tiny random-weight model of a real architecture (demo preset), saved with save_pretrained."""
    input:
        base=lambda wc: T.demo_base_dir(config, wc.model),
    output:
        model=directory(f"{DATA}/models/{{model}}"),
    log:
        f"{LOGS}/make_demo_model/{{model}}.log",
    wildcard_constraints:
        model=_names("models", source="demo"),
    params:
        spec=lambda wc: canon(config["models"][wc.model]),
        seed=config["seed"],
        code=step_hash("make_demo_model"),
    message:
        "Generating the tiny demo model {wildcards.model}"
    script:
        "../workflow_scripts/make_demo_model.py"


rule extract_activations:
    """Read every configured layer (output of block L) of one model on one dataset, one forward per batch."""
    input:
        manifest=lambda wc: manifest(wc.dataset),
        model=lambda wc: model_dir(wc.model),
        partners=lambda wc: token_partner_dirs(wc.model, wc.dataset),
        saes=lambda wc: fused_inputs(wc.model, wc.dataset),
        images=lambda wc: ancient(dataset_images(wc.dataset)),
    output:
        acts=directory(f"{EXTRACTED}"),
    log:
        f"{LOGS}/extract_activations/{{model}}/{{dataset}}{SHARD}.log",
    benchmark:
        f"{BENCH}/extract_activations/{{model}}/{{dataset}}{SHARD}.tsv"
    threads: 2
    params:
        spec=lambda wc: canon(config["models"][wc.model]),
        layers=lambda wc: rcfg.model_layers(config, wc.model),
        tokens=lambda wc: rcfg.needs_tokens(config, wc.model, wc.dataset),
        extraction=canon(
            {k: v for k, v in config["extraction"].items() if k != "fused_sae"}
        ),
        image_dir=lambda wc: dataset_images(wc.dataset) or None,
        shard=lambda wc: [int(wc.shard), SHARDS] if SHARDS > 1 else [0, 1],
        token_partners=lambda wc: token_partners(wc.model, wc.dataset),
        fused=lambda wc: fused_params(wc.model, wc.dataset),
        fused_code=lambda wc: fused_code_hash(wc.model, wc.dataset),
        code=step_hash("extract_activations"),
    message:
        "Extracting activations of {wildcards.model} on {wildcards.dataset}"
    script:
        "../workflow_scripts/extract_activations.py"


if SHARDS > 1:

    rule merge_activations:
        """Merge the extraction shards of one model and dataset into per-layer files equal to an unsharded run."""
        input:
            shards=lambda wc: [
                EXTRACTED.format(model=wc.model, dataset=wc.dataset, shard=i)
                for i in range(SHARDS)
            ],
        output:
            acts=directory(layout.activations_dir(RESULTS, "{model}", "{dataset}")),
        log:
            f"{LOGS}/merge_activations/{{model}}/{{dataset}}.log",
        params:
            layers=lambda wc: rcfg.model_layers(config, wc.model),
            code=step_hash("merge_activations"),
        message:
            "Merging extraction shards of {wildcards.model} on {wildcards.dataset}"
        script:
            "../workflow_scripts/merge_activations.py"
