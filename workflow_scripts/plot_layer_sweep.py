"""Rule script for `plot_layer_sweep`: see repshift.steps.plot_layer_sweep."""

from repshift.runtime import run_rule
from repshift.steps import plot_layer_sweep

run_rule(snakemake, plot_layer_sweep)
