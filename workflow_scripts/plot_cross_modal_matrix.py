"""Rule script for `plot_cross_modal_matrix`: see repshift.steps.plot_cross_modal_matrix."""

from repshift.runtime import run_rule
from repshift.steps import plot_cross_modal_matrix

run_rule(snakemake, plot_cross_modal_matrix)
