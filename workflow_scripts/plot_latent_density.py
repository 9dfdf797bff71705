"""Rule script for `plot_latent_density`: see repshift.steps.plot_latent_density."""

from repshift.runtime import run_rule
from repshift.steps import plot_latent_density

run_rule(snakemake, plot_latent_density)
