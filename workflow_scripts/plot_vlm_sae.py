"""Rule script for `plot_vlm_sae`: see repshift.figures.steps.plot_vlm_sae."""

from repshift.figures.steps import plot_vlm_sae
from repshift.runtime import run_rule

run_rule(snakemake, plot_vlm_sae)
