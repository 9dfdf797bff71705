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


onstart:
    # hub repos the run needs, checked once before the first job (not on dry runs); one message for all
    from repshift.config.preflight import preflight_hub

    preflight_hub(config)


include: "rules/report.smk"


# Every wildcard's constraint, in one place (repshift.config.targets.wildcard_regexes); rules only narrow them.
wildcard_constraints:
    **T.wildcard_regexes(config),


rule all:
    """The layer-sweep figure and everything it is drawn from."""
    input:
        T.default_targets(config),
        steering_targets.steering_targets(config),
        stats_targets.probe_summaries(config),


include: "rules/download.smk"
include: "rules/datasets.smk"
include: "rules/activations.smk"
include: "rules/sae.smk"
include: "rules/probes.smk"
include: "rules/steering.smk"
include: "rules/stats.smk"
include: "rules/sae_features.smk"
include: "rules/sae_training.smk"
include: "rules/figures.smk"
include: "rules/reproduction.smk"
