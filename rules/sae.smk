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
    conda:
        "../envs/torch.yaml"
    params:
        release=lambda wc: config["saes"][wc.sae]["release"],
        sae_id=lambda wc: config["saes"][wc.sae]["id_template"].format(layer=wc.layer),
        code=step_hash("fetch_sae"),
    script:
        "../workflow_scripts/fetch_sae.py"


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
    conda:
        "../envs/torch.yaml"
    params:
        train=lambda wc: canon(config["saes"][wc.sae]["train"]),
        layers=lambda wc: rcfg.sae_layers(
            config, wc.sae, config["saes"][wc.sae]["train"]["model"]
        ),
        seed=config["seed"],
        code=step_hash("train_demo_sae"),
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
    conda:
        "../envs/torch.yaml"
    params:
        layers=lambda wc: rcfg.sae_layers(config, wc.sae, wc.model),
        sae_dirs=lambda wc: sae_dirs(wc.sae, wc.model),
        device=config["extraction"]["device"],
        code=step_hash("encode_sae"),
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
    conda:
        "../envs/torch.yaml"
    params:
        comparison=lambda wc: canon(config["comparisons"][wc.comparison]),
        layers=lambda wc: rcfg.comparison_layers(config, wc.comparison),
        bootstrap=config["stats"]["bootstrap"],
        seed=config["seed"],
        code=step_hash("compare_sae"),
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
    conda:
        "../envs/torch.yaml"
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
    script:
        "../workflow_scripts/spliced_loss.py"


rule plot_latent_density:
    """Latent density: histograms of log10 firing frequency per model and layer, dead latents apart."""
    input:
        codes=all_code_dirs(),
    output:
        pdf=report(
            f"{RESULTS}/figs/latent_density.pdf",
            caption="../report/latent_density.rst",
            category="SAE",
        ),
        png=f"{RESULTS}/figs/latent_density.png",
        tsv=f"{RESULTS}/figs/latent_density.tsv",
    log:
        f"{LOGS}/plot_latent_density/latent_density.log",
    conda:
        "../envs/plot.yaml"
    params:
        code=step_hash("plot_latent_density"),
    script:
        "../workflow_scripts/plot_latent_density.py"


rule plot_latents_shift:
    """Latents gained and lost per layer between base and adapted model, with a top-latents table."""
    input:
        latents=all_shift_tables(latents=True),
    output:
        pdf=report(
            f"{RESULTS}/figs/latents_shift.pdf",
            caption="../report/latents_shift.rst",
            category="SAE",
        ),
        png=f"{RESULTS}/figs/latents_shift.png",
        tsv=f"{RESULTS}/figs/latents_shift.tsv",
    log:
        f"{LOGS}/plot_latents_shift/latents_shift.log",
    conda:
        "../envs/plot.yaml"
    params:
        code=step_hash("plot_latents_shift"),
    script:
        "../workflow_scripts/plot_latents_shift.py"
