"""Rule script for `plot_latents_shift`: see repshift.figures.steps.plot_latents_shift."""

from repshift.figures.steps import plot_latents_shift
from repshift.runtime import run_rule

run_rule(snakemake, plot_latents_shift)
