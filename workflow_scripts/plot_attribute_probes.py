"""Rule script for `plot_attribute_probes`: see repshift.steps.plot_attribute_probes."""

from repshift.runtime import run_rule
from repshift.steps import plot_attribute_probes

run_rule(snakemake, plot_attribute_probes)
