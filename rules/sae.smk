"""SAEs: fetch (pretrained) or fit (demo) one SAE per layer, encode activations, compare two models."""


rule fetch_sae:
    """Fetch one pretrained SAE (sae-lens release + id) into data/ so that every later job runs offline."""
    output:
        sae=directory(f"{DATA}/saes/{{sae}}/layer-{{layer}}"),
    log:
        f"{LOGS}/fetch_sae/{{sae}}/layer-{{layer}}.log",
    params:
        release=lambda wc: config["saes"][wc.sae]["release"],
        sae_id=lambda wc: config["saes"][wc.sae]["id_template"].format(layer=wc.layer),
        code=code_hash("sae"),
    wildcard_constraints:
        sae=_names("saes", source="pretrained"),
    script:
        "../workflow_scripts/fetch_sae.py"


rule train_demo_sae:
    """Fit a tiny JumpReLU SAE on the demo LLM's own activations at one layer with sae-lens' trainer."""
    input:
        acts=lambda wc: activations(
            config["saes"][wc.sae]["train"]["model"], config["saes"][wc.sae]["train"]["dataset"]
        ),
    output:
        sae=directory(f"{DATA}/saes/{{sae}}/layer-{{layer}}"),
    log:
        f"{LOGS}/train_demo_sae/{{sae}}/layer-{{layer}}.log",
    params:
        train=lambda wc: config["saes"][wc.sae]["train"],
        seed=config["seed"],
        code=code_hash("sae", "h5io"),
    wildcard_constraints:
        sae=_names("saes", source="demo"),
    script:
        "../workflow_scripts/train_demo_sae.py"


rule encode_sae:
    """Encode one model's token-level activations with one layer's SAE; transfer-quality metrics by position kind."""
    input:
        acts=lambda wc: activations(wc.model, wc.dataset),
        sae=lambda wc: sae_dir(wc.sae, wc.layer),
    output:
        codes=f"{RESULTS}/sae/{{sae}}/{{model}}/{{dataset}}/layer-{{layer}}.codes.h5",
        transfer=f"{RESULTS}/sae/{{sae}}/{{model}}/{{dataset}}/layer-{{layer}}.transfer.tsv",
    log:
        f"{LOGS}/encode_sae/{{sae}}/{{model}}/{{dataset}}/layer-{{layer}}.log",
    benchmark:
        f"{BENCH}/encode_sae/{{sae}}/{{model}}/{{dataset}}/layer-{{layer}}.tsv"
    params:
        device=config["extraction"]["device"],
        code=code_hash("sae", "codes_h5", "h5io"),
    script:
        "../workflow_scripts/encode_sae.py"


rule compare_sae:
    """Representation shift between two models at one layer, in one SAE basis, on identical token ids."""
    input:
        base=lambda wc: f"{sae_outputs(config['comparisons'][wc.comparison]['sae'], config['comparisons'][wc.comparison]['base'], config['comparisons'][wc.comparison]['dataset'], wc.layer)}.codes.h5",
        adapted=lambda wc: f"{sae_outputs(config['comparisons'][wc.comparison]['sae'], config['comparisons'][wc.comparison]['adapted'], config['comparisons'][wc.comparison]['dataset'], wc.layer)}.codes.h5",
        sae=lambda wc: sae_dir(config["comparisons"][wc.comparison]["sae"], wc.layer),
    output:
        shift=f"{RESULTS}/sae/shift/{{comparison}}/layer-{{layer}}.tsv",
        latents=f"{RESULTS}/sae/shift/{{comparison}}/layer-{{layer}}.latents.tsv",
    log:
        f"{LOGS}/compare_sae/{{comparison}}/layer-{{layer}}.log",
    params:
        comparison=lambda wc: config["comparisons"][wc.comparison],
        code=code_hash("sae", "codes_h5"),
    script:
        "../workflow_scripts/compare_sae.py"
