"""Rule script for `plot_attribute_probes`: see repshift.figures.steps.plot_attribute_probes."""

from repshift.figures.steps import plot_attribute_probes
from repshift.runtime import run_rule

run_rule(snakemake, plot_attribute_probes)
