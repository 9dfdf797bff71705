"""Rule script for `plot_learning_curves`: see repshift.figures.steps.plot_learning_curves."""

from repshift.figures.steps import plot_learning_curves
from repshift.runtime import run_rule

run_rule(snakemake, plot_learning_curves)
