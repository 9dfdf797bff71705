"""Rule script for `plot_cross_modal_matrix`: see repshift.figures.steps.plot_cross_modal_matrix."""

from repshift.figures.steps import plot_cross_modal_matrix
from repshift.runtime import run_rule

run_rule(snakemake, plot_cross_modal_matrix)
