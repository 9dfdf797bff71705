"""Rule script for `plot_learning_curves`: see repshift.steps.plot_learning_curves."""

from repshift.runtime import run_rule
from repshift.steps import plot_learning_curves

run_rule(snakemake, plot_learning_curves)
