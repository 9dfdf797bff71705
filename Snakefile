"""repshift: how a language model's representations shift when it becomes a vision-language model.

    snakemake --cores 8 results/figs/layer_sweep.pdf                      # the real experiment (GPU, hub token)
    snakemake --workflow-profile profiles/demo demo/results/figs/layer_sweep.pdf   # offline demo preset

Layer L everywhere means the output of decoder block L (0-based; HF hidden_states[L+1], last block pre-norm).
"""

from snakemake.utils import min_version

min_version("9.0")


# config.yaml is the default; `--configfile other.yaml` replaces it (not merges into it), also in the jobs
# Snakemake submits to a cluster, which receive --configfiles but not --replace-workflow-config.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "rules/common.smk"


wildcard_constraints:
    model=_names("models"),
    dataset=_names("datasets"),
    sae=_names("saes"),
    comparison=_names("comparisons"),
    analysis=_names("sae_features"),
    task="|".join(config["probes"]["tasks"]) or "(?!x)x",
    layer=r"\d+",
    shard=r"\d+",


rule all:
    """The layer-sweep figure and everything it is drawn from."""
    input:
        f"{RESULTS}/figs/layer_sweep.pdf",
        f"{RESULTS}/figs/probe_tasks.pdf",
        f"{RESULTS}/figs/latent_density.pdf",
        f"{RESULTS}/figs/latents_shift.pdf",
        probe_figures(),
        sae_feature_targets(),
        [
            f"{RESULTS}/figs/datasets/{d}.png"
            for d, spec in config["datasets"].items()
            if spec["modality"] == "attribute"
        ],


# Jobs that need the internet run on the submitting host, not on (often offline) cluster nodes.
localrules:
    download_coco,
    download_cifar100,
    fetch_sae,


include: "rules/download.smk"
include: "rules/datasets.smk"
include: "rules/activations.smk"
include: "rules/sae.smk"
include: "rules/probes.smk"
include: "rules/sae_features.smk"
include: "rules/figures.smk"
