"""Figures, each with the numbers it plots beside it as a tidy TSV."""


rule plot_layer_sweep:
    """Layer sweep: SAE shift, transfer quality and probe accuracy per layer (PDF, PNG and TSV)."""
    input:
        shift=all_shift_tables(),
        codes=all_code_dirs(),
        probes=all_probe_tables(rcfg.main_probe_tasks(config)),
    output:
        pdf=report(
            f"{RESULTS}/figs/layer_sweep.pdf",
            caption="../report/layer_sweep.rst",
            category="Layer sweep",
        ),
        png=f"{RESULTS}/figs/layer_sweep.png",
        tsv=f"{RESULTS}/figs/layer_sweep.tsv",
    log:
        f"{LOGS}/plot_layer_sweep/layer_sweep.log",
    conda:
        "../envs/plot.yaml"
    params:
        comparisons=canon(config["comparisons"]),
        main_tasks=rcfg.main_probe_tasks(config),
        code=step_hash("plot_layer_sweep", "figures"),
    script:
        "../workflow_scripts/plot_layer_sweep.py"


rule plot_probe_tasks:
    """Probe accuracy per layer for every task (semantic, modality, attributes), with controls (PDF, PNG, TSV)."""
    input:
        probes=all_probe_tables(),
    output:
        pdf=report(
            f"{RESULTS}/figs/probe_tasks.pdf",
            caption="../report/probe_tasks.rst",
            category="Probes",
        ),
        png=f"{RESULTS}/figs/probe_tasks.png",
        tsv=f"{RESULTS}/figs/probe_tasks.tsv",
    log:
        f"{LOGS}/plot_probe_tasks/probe_tasks.log",
    conda:
        "../envs/plot.yaml"
    params:
        code=step_hash("plot_probe_tasks", "figures"),
    script:
        "../workflow_scripts/plot_probe_tasks.py"
