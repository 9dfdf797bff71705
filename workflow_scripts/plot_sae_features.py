"""Rule script for `plot_sae_features`: see repshift.figures.steps.plot_sae_features."""

from repshift.figures.steps import plot_sae_features
from repshift.runtime import run_rule

run_rule(snakemake, plot_sae_features)
