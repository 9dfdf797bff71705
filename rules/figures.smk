"""Figures, each with the numbers it plots beside it as a tidy TSV."""


rule plot_layer_sweep:
    """Layer sweep: SAE shift, transfer quality and probe accuracy per layer (PDF, PNG and TSV)."""
    input:
        shift=all_shift_tables(),
        codes=all_code_dirs(),
        spliced=all_spliced_tables(),
        probes=all_probe_tables(rcfg.main_probe_tasks(config)),
    output:
        pdf=f"{RESULTS}/figs/layer_sweep.pdf",
        png=report(
            f"{RESULTS}/figs/layer_sweep.png",
            caption="../report/layer_sweep.rst",
            category="Layer sweep",
            labels=figure_labels("layer_sweep", "figure (PNG)"),
        ),
        tsv=report(
            f"{RESULTS}/figs/layer_sweep.tsv",
            caption="../report/table.rst",
            category="Layer sweep",
            labels=figure_labels("layer_sweep", "numbers (TSV)"),
        ),
    log:
        f"{LOGS}/plot_layer_sweep/layer_sweep.log",
    params:
        palette=palette(),
        n=figure_n("layer_sweep"),
        comparisons=canon(config["comparisons"]),
        main_tasks=rcfg.main_probe_tasks(config),
        min_examples=config["figures"]["min_examples"],
        code=step_hash("plot_layer_sweep"),
    message:
        "Drawing the layer sweep (shift, SAE transfer, probes)"
    script:
        "../workflow_scripts/plot_layer_sweep.py"


rule plot_probe_tasks:
    """Probe accuracy per layer for every task (semantic, modality, attributes), with controls (PDF, PNG, TSV)."""
    input:
        probes=all_probe_tables(),
    output:
        pdf=f"{RESULTS}/figs/probe_tasks.pdf",
        png=report(
            f"{RESULTS}/figs/probe_tasks.png",
            caption="../report/probe_tasks.rst",
            category="Probes",
            labels=figure_labels("probe_tasks", "figure (PNG)"),
        ),
        tsv=report(
            f"{RESULTS}/figs/probe_tasks.tsv",
            caption="../report/table.rst",
            category="Probes",
            labels=figure_labels("probe_tasks", "numbers (TSV)"),
        ),
    log:
        f"{LOGS}/plot_probe_tasks/probe_tasks.log",
    params:
        palette=palette(),
        n=figure_n("probe_tasks"),
        vision_tasks=vision_tasks(),
        tasks=list(config["probes"]["tasks"]),
        code=step_hash("plot_probe_tasks"),
    message:
        "Drawing probe accuracy per task"
    script:
        "../workflow_scripts/plot_probe_tasks.py"


rule plot_attribute_probes:
    """Image-attribute probes (brightness, redness, ...) per layer, decoder and vision tower (PDF, PNG, TSV)."""
    input:
        probes=all_probe_tables(attribute_tasks()),
    output:
        pdf=f"{RESULTS}/figs/attribute_probes.pdf",
        png=report(
            f"{RESULTS}/figs/attribute_probes.png",
            caption="../report/attribute_probes.rst",
            category="Probes",
            labels=figure_labels("attribute_probes", "figure (PNG)"),
        ),
        tsv=report(
            f"{RESULTS}/figs/attribute_probes.tsv",
            caption="../report/table.rst",
            category="Probes",
            labels=figure_labels("attribute_probes", "numbers (TSV)"),
        ),
    log:
        f"{LOGS}/plot_attribute_probes/attribute_probes.log",
    params:
        palette=palette(),
        n=figure_n("attribute_probes"),
        vision_tasks=vision_tasks(),
        code=step_hash("plot_attribute_probes"),
    message:
        "Drawing the image-attribute probes"
    script:
        "../workflow_scripts/plot_attribute_probes.py"


rule plot_cross_modal_matrix:
    """Layer x layer cross-modal transfer matrices (captions -> images, images -> captions) (PDF, PNG, TSV)."""
    input:
        tables=cross_layer_tables(),
    output:
        pdf=f"{RESULTS}/figs/cross_modal_matrix.pdf",
        png=report(
            f"{RESULTS}/figs/cross_modal_matrix.png",
            caption="../report/cross_modal_matrix.rst",
            category="Probes",
            labels=figure_labels("cross_modal_matrix", "figure (PNG)"),
        ),
        tsv=report(
            f"{RESULTS}/figs/cross_modal_matrix.tsv",
            caption="../report/table.rst",
            category="Probes",
            labels=figure_labels("cross_modal_matrix", "numbers (TSV)"),
        ),
    log:
        f"{LOGS}/plot_cross_modal_matrix/cross_modal_matrix.log",
    params:
        palette=palette(),
        n=figure_n("cross_modal_matrix"),
        code=step_hash("plot_cross_modal_matrix"),
    message:
        "Drawing the layer x layer cross-modal matrices"
    script:
        "../workflow_scripts/plot_cross_modal_matrix.py"


rule plot_learning_curves:
    """Probe accuracy against training fraction at the learning-curve layers, with intervals (PDF, PNG, TSV)."""
    input:
        probes=all_probe_tables(curve_tasks()),
    output:
        pdf=f"{RESULTS}/figs/learning_curves.pdf",
        png=report(
            f"{RESULTS}/figs/learning_curves.png",
            caption="../report/learning_curves.rst",
            category="Probes",
            labels=figure_labels("learning_curves", "figure (PNG)"),
        ),
        tsv=report(
            f"{RESULTS}/figs/learning_curves.tsv",
            caption="../report/table.rst",
            category="Probes",
            labels=figure_labels("learning_curves", "numbers (TSV)"),
        ),
    log:
        f"{LOGS}/plot_learning_curves/learning_curves.log",
    params:
        palette=palette(),
        n=figure_n("learning_curves"),
        code=step_hash("plot_learning_curves"),
    message:
        "Drawing the probes' learning curves"
    script:
        "../workflow_scripts/plot_learning_curves.py"
