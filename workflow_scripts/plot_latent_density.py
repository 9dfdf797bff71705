"""Rule script for `plot_latent_density`: see repshift.figures.steps.plot_latent_density."""

from repshift.figures.steps import plot_latent_density
from repshift.runtime import run_rule

run_rule(snakemake, plot_latent_density)
