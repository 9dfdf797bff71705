"""Linear probes per task and layer: within-model, cross-model and cross-modal, with controls."""


rule train_probe:
    """Fit and evaluate the probes of one task at one layer from cached activations (never re-extracts)."""
    input:
        unpack(probe_inputs),
    output:
        results=f"{RESULTS}/probes/{{task}}/layer-{{layer}}.tsv",
        weights=directory(f"{RESULTS}/probes/{{task}}/weights/layer-{{layer}}"),
    log:
        f"{LOGS}/train_probe/{{task}}/layer-{{layer}}.log",
    benchmark:
        f"{BENCH}/train_probe/{{task}}/layer-{{layer}}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 2
    params:
        task=lambda wc: canon(config["probes"]["tasks"][wc.task]),
        settings=canon(config["probes"]["settings"]),
        seed=config["seed"],
        code=step_hash(
            "train_probe",
            "probes",
            "h5io",
            "steps:_align",
            "steps:_pair_rows",
            "steps:_direction_cosine",
        ),
    script:
        "../workflow_scripts/train_probe.py"
