"""Rule script for `plot_layer_sweep`: see repshift.figures.steps.plot_layer_sweep."""

from repshift.figures.steps import plot_layer_sweep
from repshift.runtime import run_rule

run_rule(snakemake, plot_layer_sweep)
