"""Rule script for `plot_probe_tasks`: see repshift.steps.plot_probe_tasks."""

from repshift.runtime import run_rule
from repshift.steps import plot_probe_tasks

run_rule(snakemake, plot_probe_tasks)
