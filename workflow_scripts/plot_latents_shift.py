"""Rule script for `plot_latents_shift`: see repshift.steps.plot_latents_shift."""

from repshift.runtime import run_rule
from repshift.steps import plot_latents_shift

run_rule(snakemake, plot_latents_shift)
