"""Rule script for `plot_sae_features`: see repshift.steps.plot_sae_features."""

from repshift.runtime import run_rule
from repshift.steps import plot_sae_features

run_rule(snakemake, plot_sae_features)
