"""Linear probes per task and layer: within-model, cross-model and cross-modal, with controls."""


def _probe_inputs(wc):
    task = config["probes"]["tasks"][wc.task]
    return {m: activations(m, task["dataset"]) for m in rcfg.task_models(config, wc.task)}


rule train_probe:
    """Fit and evaluate the probes of one task at one layer from cached activations (never re-extracts)."""
    input:
        unpack(_probe_inputs),
    output:
        results=f"{RESULTS}/probes/{{task}}/layer-{{layer}}.tsv",
        weights=directory(f"{RESULTS}/probes/{{task}}/weights/layer-{{layer}}"),
    log:
        f"{LOGS}/train_probe/{{task}}/layer-{{layer}}.log",
    benchmark:
        f"{BENCH}/train_probe/{{task}}/layer-{{layer}}.tsv"
    threads: 2
    params:
        task=lambda wc: config["probes"]["tasks"][wc.task],
        settings=config["probes"]["settings"],
        seed=config["seed"],
        code=code_hash("probes", "h5io"),
    script:
        "../workflow_scripts/train_probe.py"
