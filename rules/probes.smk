"""Linear probes per task and layer: within-model, cross-model and cross-modal, with controls."""


rule train_probe:
    """Fit and evaluate the probes of one task at one layer from cached activations (never re-extracts)."""
    input:
        unpack(probe_inputs),
    output:
        results=layout.probe_table(RESULTS, "{task}", "{layer}"),
        weights=directory(layout.probe_weights(RESULTS, "{task}", "{layer}")),
    log:
        f"{LOGS}/train_probe/{{task}}/layer-{{layer}}.log",
    benchmark:
        f"{BENCH}/train_probe/{{task}}/layer-{{layer}}.tsv"
    threads: config["probes"]["threads"]
    params:
        task=lambda wc: canon(config["probes"]["tasks"][wc.task]),
        settings=canon(config["probes"]["settings"]),
        seed=config["seed"],
        code=step_hash("train_probe"),
    message:
        "Fitting probes for task {wildcards.task} at layer {wildcards.layer}"
    script:
        "../workflow_scripts/train_probe.py"


rule score_cross_layer:
    """Layer x layer cross-modal transfer of one task: saved fold probes scored at every layer (no refitting)."""
    input:
        unpack(cross_layer_inputs),
    output:
        results=layout.cross_layer_table(RESULTS, "{task}"),
    log:
        f"{LOGS}/score_cross_layer/{{task}}.log",
    benchmark:
        f"{BENCH}/score_cross_layer/{{task}}.tsv"
    params:
        task=lambda wc: canon(config["probes"]["tasks"][wc.task]),
        layers=lambda wc: rcfg.probe_layers(config, wc.task),
        code=step_hash("score_cross_layer"),
    message:
        "Scoring cross-modal probes layer x layer for task {wildcards.task}"
    script:
        "../workflow_scripts/score_cross_layer.py"


rule pixel_baseline:
    """The attribute task's probe on trivial pixel statistics of each variant (the score activations must beat)."""
    input:
        unpack(pixel_baseline_inputs),
    output:
        results=layout.pixel_baseline_table(RESULTS, "{task}"),
    log:
        f"{LOGS}/pixel_baseline/{{task}}.log",
    benchmark:
        f"{BENCH}/pixel_baseline/{{task}}.tsv"
    threads: config["probes"]["threads"]
    params:
        settings=canon(config["probes"]["settings"]),
        input_size=lambda wc: config["datasets"][
            config["probes"]["tasks"][wc.task]["dataset"]
        ].get("input_size"),
        code=step_hash("pixel_baseline"),
    message:
        "Fitting the pixel-statistics baseline of task {wildcards.task}"
    script:
        "../workflow_scripts/pixel_baseline.py"
