"""SAEs: fetch (pretrained) or fit (demo) one SAE per layer, encode activations, compare two models."""


# needs the internet: a local job on the submitting host, not on (often offline) cluster nodes
rule fetch_sae:
    """Fetch one pretrained SAE (sae-lens release + id) into data/ so that every later job runs offline."""
    output:
        sae=directory(layout.sae_layer_dir(DATA, "{sae}", "{layer}")),
    log:
        f"{LOGS}/fetch_sae/{{sae}}/layer-{{layer}}.log",
    wildcard_constraints:
        sae=_names("saes", source="pretrained"),
    localrule: True
    params:
        release=lambda wc: config["saes"][wc.sae]["release"],
        sae_id=lambda wc: config["saes"][wc.sae]["id_template"].format(layer=wc.layer),
        code=step_hash("fetch_sae"),
    message:
        "Fetching SAE {wildcards.sae} for layer {wildcards.layer}"
    script:
        "../workflow_scripts/fetch_sae.py"


rule collect_sae:
    """One marker per (pretrained SAE, model) over its fetched layer folders: later jobs (and the dry run) list one
    input instead of every layer's folder."""
    input:
        lambda wc: list(sae_dirs(wc.sae, wc.model).values()),
    output:
        marker=layout.sae_fetched(DATA, "{sae}", "{model}"),
    log:
        f"{LOGS}/collect_sae/{{sae}}/{{model}}.log",
    wildcard_constraints:
        sae=_names("saes", source="pretrained"),
        model=_names("models"),
    localrule: True
    params:
        sae_dirs=lambda wc: sae_dirs(wc.sae, wc.model),
        code=step_hash("collect_sae"),
    message:
        "Checking that SAE {wildcards.sae} is fetched at every layer of {wildcards.model}"
    script:
        "../workflow_scripts/collect_sae.py"


rule train_demo_sae:
    """Fit the demo's tiny JumpReLU SAEs (one per layer) on the demo LLM's own activations with sae-lens."""
    input:
        acts=lambda wc: T.sae_train_acts(config, wc.sae),
    output:
        saes=directory(layout.sae_family_dir(DATA, "{sae}")),
    log:
        f"{LOGS}/train_demo_sae/{{sae}}.log",
    wildcard_constraints:
        sae=_names("saes", source="demo"),
    params:
        train=lambda wc: canon(config["saes"][wc.sae]["train"]),
        layers=lambda wc: rcfg.sae_layers(
            config, wc.sae, config["saes"][wc.sae]["train"]["model"]
        ),
        seed=config["seed"],
        code=step_hash("train_demo_sae"),
    message:
        "Fitting the demo SAE family {wildcards.sae}"
    script:
        "../workflow_scripts/train_demo_sae.py"


rule encode_sae:
    """Encode one model's token-level activations with each layer's SAE; transfer quality by position kind."""
    input:
        acts=lambda wc: activations(wc.model, wc.dataset),
        saes=lambda wc: sae_inputs(wc.sae, wc.model),
    output:
        codes=directory(layout.encoded_dir(RESULTS, "{sae}", "{model}", "{dataset}")),
    log:
        f"{LOGS}/encode_sae/{{sae}}/{{model}}/{{dataset}}.log",
    benchmark:
        f"{BENCH}/encode_sae/{{sae}}/{{model}}/{{dataset}}.tsv"
    params:
        layers=lambda wc: rcfg.sae_layers(config, wc.sae, wc.model),
        sae_dirs=lambda wc: sae_dirs(wc.sae, wc.model),
        device=config["extraction"]["device"],
        code=step_hash("encode_sae"),
    message:
        "Encoding {wildcards.model} on {wildcards.dataset} with SAE {wildcards.sae}"
    script:
        "../workflow_scripts/encode_sae.py"


rule compare_sae:
    """Representation shift between two models at every layer, in one SAE basis, on identical token ids."""
    input:
        base=lambda wc: sae_outputs(wc.comparison, "base"),
        adapted=lambda wc: sae_outputs(wc.comparison, "adapted"),
    output:
        shift=layout.shift_table(RESULTS, "{comparison}"),
        latents=layout.shift_latents(RESULTS, "{comparison}"),
    log:
        f"{LOGS}/compare_sae/{{comparison}}.log",
    params:
        comparison=lambda wc: canon(config["comparisons"][wc.comparison]),
        layers=lambda wc: rcfg.comparison_layers(config, wc.comparison),
        bootstrap=config["stats"]["bootstrap"],
        seed=config["seed"],
        code=step_hash("compare_sae"),
    message:
        "Comparing SAE codes for {wildcards.comparison}"
    script:
        "../workflow_scripts/compare_sae.py"


rule spliced_loss:
    """CE loss recovered when each layer's SAE reconstruction replaces the output of block L (text rows)."""
    input:
        manifest=lambda wc: manifest(wc.dataset),
        model=lambda wc: model_dir(wc.model),
        saes=lambda wc: sae_inputs(wc.sae, wc.model),
    output:
        tsv=layout.spliced_table(RESULTS, "{sae}", "{model}", "{dataset}"),
    log:
        f"{LOGS}/spliced_loss/{{sae}}/{{model}}/{{dataset}}.log",
    benchmark:
        f"{BENCH}/spliced_loss/{{sae}}/{{model}}/{{dataset}}.tsv"
    threads: 2
    params:
        spec=lambda wc: canon(config["models"][wc.model]),
        sae_dirs=lambda wc: sae_dirs(wc.sae, wc.model),
        spliced=canon(config.get("spliced", {})),
        extraction=lambda wc: {
            k: config["extraction"][k] for k in ("dtype", "device", "max_tokens")
        },
        seed=config["seed"],
        bootstrap=config["stats"]["bootstrap"],
        code=step_hash("spliced_loss"),
    message:
        "Spliced CE loss of {wildcards.model} on {wildcards.dataset} with SAE {wildcards.sae}"
    script:
        "../workflow_scripts/spliced_loss.py"


rule plot_latent_density:
    """Latent density: histograms of log10 firing frequency per model and layer, dead latents apart."""
    input:
        codes=all_code_dirs(),
    output:
        pdf=f"{RESULTS}/figs/latent_density.pdf",
        png=report(
            f"{RESULTS}/figs/latent_density.png",
            caption="../report/latent_density.rst",
            category="SAE",
            labels=figure_labels("latent_density", "figure (PNG)"),
        ),
        tsv=report(
            f"{RESULTS}/figs/latent_density.tsv",
            caption="../report/table.rst",
            category="SAE",
            labels=figure_labels("latent_density", "numbers (TSV)"),
        ),
    log:
        f"{LOGS}/plot_latent_density/latent_density.log",
    params:
        palette=palette(),
        n=figure_n("latent_density"),
        code=step_hash("plot_latent_density"),
    message:
        "Drawing SAE latent density"
    script:
        "../workflow_scripts/plot_latent_density.py"


rule plot_latents_shift:
    """Latents gained and lost per layer between base and adapted model, with a top-latents table."""
    input:
        latents=all_shift_tables(latents=True),
    output:
        pdf=f"{RESULTS}/figs/latents_shift.pdf",
        png=report(
            f"{RESULTS}/figs/latents_shift.png",
            caption="../report/latents_shift.rst",
            category="SAE",
            labels=figure_labels("latents_shift", "figure (PNG)"),
        ),
        tsv=report(
            f"{RESULTS}/figs/latents_shift.tsv",
            caption="../report/table.rst",
            category="SAE",
            labels=figure_labels("latents_shift", "numbers (TSV)"),
        ),
    log:
        f"{LOGS}/plot_latents_shift/latents_shift.log",
    params:
        palette=palette(),
        n=figure_n("latents_shift"),
        code=step_hash("plot_latents_shift"),
    message:
        "Drawing latents gained and lost"
    script:
        "../workflow_scripts/plot_latents_shift.py"
