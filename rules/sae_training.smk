"""SAEs trained on a VLM's own residual stream: train, evaluate beside the base model's SAE, draw."""


rule train_vlm_sae:
    """Train one layer's SAE on the model's own residual stream (sae-lens SAETrainer; nothing dense on disk)."""
    input:
        manifest=training_manifest(),
        model=lambda wc: model_dir(wc.model),
        images=ancient(training_images()),
    output:
        sae=directory(layout.trained_sae_dir(DATA, "{model}", "{layer}")),
        curve=layout.vlm_sae_table(RESULTS, "{model}", "{layer}", "curve"),
    log:
        f"{LOGS}/train_vlm_sae/{{model}}/layer-{{layer}}.log",
    benchmark:
        f"{BENCH}/train_vlm_sae/{{model}}/layer-{{layer}}.tsv"
    params:
        spec=lambda wc: canon(config["models"][wc.model]),
        training=vlm_sae_training(),
        extraction=canon(config["extraction"]),
        seed=config["seed"],
        code=step_hash("train_vlm_sae"),
    message:
        "Training an SAE on {wildcards.model} at layer {wildcards.layer}"
    script:
        "../workflow_scripts/train_vlm_sae.py"


rule evaluate_vlm_sae:
    """Trained vs base SAE on held-out tokens: metrics by modality, spliced CE, dictionary match, sharing, probes."""
    input:
        manifest=training_manifest(),
        model=lambda wc: model_dir(wc.model),
        images=ancient(training_images()),
        sae=layout.trained_sae_dir(DATA, "{model}", "{layer}"),
        base=trained_base_sae_input,
    output:
        eval=layout.vlm_sae_table(RESULTS, "{model}", "{layer}", "eval"),
        compare=layout.vlm_sae_table(RESULTS, "{model}", "{layer}", "compare"),
        sharing=layout.vlm_sae_table(RESULTS, "{model}", "{layer}", "sharing"),
        sparse=layout.vlm_sae_table(RESULTS, "{model}", "{layer}", "sparse"),
    log:
        f"{LOGS}/evaluate_vlm_sae/{{model}}/layer-{{layer}}.log",
    benchmark:
        f"{BENCH}/evaluate_vlm_sae/{{model}}/layer-{{layer}}.tsv"
    params:
        spec=lambda wc: canon(config["models"][wc.model]),
        training=vlm_sae_training(),
        extraction=canon(config["extraction"]),
        base_sae_dir=trained_base_sae_dir,
        code=step_hash("evaluate_vlm_sae"),
    message:
        "Evaluating the trained SAE of {wildcards.model} at layer {wildcards.layer}"
    script:
        "../workflow_scripts/evaluate_vlm_sae.py"


rule plot_vlm_sae:
    """Trained-SAE figures: quality by modality, dictionary match, modality sharing, sparse probes (PDF, PNG, TSV)."""
    input:
        **{kind: ST.all_vlm_sae_tables(config, kind) for kind in ST.VLM_SAE_TABLES},
    output:
        **{
            f"{name}_{ext}": (
                report(
                    layout.figure(RESULTS, name, ext),
                    caption=(
                        f"../report/{name}.rst"
                        if ext == "png"
                        else "../report/table.rst"
                    ),
                    category="Trained SAEs",
                    labels=figure_labels(
                        name, "figure (PNG)" if ext == "png" else "numbers (TSV)"
                    ),
                )
                if ext != "pdf"
                else layout.figure(RESULTS, name, ext)
            )
            for name in ST.VLM_SAE_FIGURES
            for ext in ("pdf", "png", "tsv")
        },
    log:
        f"{LOGS}/plot_vlm_sae/vlm_sae.log",
    params:
        palette=palette(),
        n=figure_n("vlm_sae"),
        code=step_hash("plot_vlm_sae"),
    message:
        "Plotting the trained-SAE figures"
    script:
        "../workflow_scripts/plot_vlm_sae.py"
