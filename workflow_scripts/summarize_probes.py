"""Rule script for `summarize_probes`: see repshift.probes.steps.summarize_probes."""

from repshift.probes.steps import summarize_probes
from repshift.runtime import run_rule

run_rule(snakemake, summarize_probes)
