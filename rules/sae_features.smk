"""SAE-feature analyses on image datasets: class features and SAE-feature classification, per model and layer."""


rule class_features:
    """Per class, the SAE latents most often in its images' top-k sets, after dropping generic latents (TSV)."""
    input:
        unpack(class_feature_inputs),
    output:
        table=layout.sae_feature_table(
            RESULTS, "{analysis}", "{model}", "{layer}", "class_features"
        ),
    log:
        f"{LOGS}/class_features/{{analysis}}/{{model}}/layer-{{layer}}.log",
    params:
        analysis=lambda wc: sae_feature_params(wc.analysis, CLASS_FEATURE_KEYS),
        code=step_hash("class_features"),
    message:
        "Class features of {wildcards.model} at layer {wildcards.layer} ({wildcards.analysis})"
    script:
        "../workflow_scripts/class_features.py"


rule sae_feature_probe:
    """Classify the classes from pooled SAE features (raw, binarised) and raw activations per training fraction."""
    input:
        unpack(sae_feature_inputs),
    output:
        results=layout.sae_feature_table(
            RESULTS, "{analysis}", "{model}", "{layer}", "probe"
        ),
    log:
        f"{LOGS}/sae_feature_probe/{{analysis}}/{{model}}/layer-{{layer}}.log",
    benchmark:
        f"{BENCH}/sae_feature_probe/{{analysis}}/{{model}}/layer-{{layer}}.tsv"
    threads: 2
    params:
        analysis=lambda wc: sae_feature_params(wc.analysis, FEATURE_PROBE_KEYS),
        code=step_hash("sae_feature_probe"),
    message:
        "SAE-feature classification of {wildcards.model} at layer {wildcards.layer} ({wildcards.analysis})"
    script:
        "../workflow_scripts/sae_feature_probe.py"


rule plot_sae_features:
    """SAE-feature vs raw-activation classification: macro-F1 against training fraction per layer (PDF, PNG, TSV)."""
    input:
        probes=all_sae_feature_tables("probe"),
    output:
        pdf=f"{RESULTS}/figs/sae_features.pdf",
        png=report(
            f"{RESULTS}/figs/sae_features.png",
            caption="../report/sae_features.rst",
            category="SAE features",
            labels=figure_labels("sae_features", "figure (PNG)"),
        ),
        tsv=report(
            f"{RESULTS}/figs/sae_features.tsv",
            caption="../report/table.rst",
            category="SAE features",
            labels=figure_labels("sae_features", "numbers (TSV)"),
        ),
    log:
        f"{LOGS}/plot_sae_features/sae_features.log",
    params:
        palette=palette(),
        n=figure_n("sae_features"),
        code=step_hash("plot_sae_features"),
    message:
        "Drawing SAE-feature classification"
    script:
        "../workflow_scripts/plot_sae_features.py"
