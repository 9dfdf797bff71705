"""Rule script for `plot_probe_tasks`: see repshift.figures.steps.plot_probe_tasks."""

from repshift.figures.steps import plot_probe_tasks
from repshift.runtime import run_rule

run_rule(snakemake, plot_probe_tasks)
