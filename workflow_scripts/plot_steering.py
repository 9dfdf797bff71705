"""Rule script for `plot_steering`: see repshift.steering.steps.plot_steering."""

from repshift.runtime import run_rule
from repshift.steering.steps import plot_steering

run_rule(snakemake, plot_steering)
