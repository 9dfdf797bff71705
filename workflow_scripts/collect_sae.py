"""Rule script for `collect_sae`: see repshift.sae.steps.collect_sae."""

from repshift.runtime import run_rule
from repshift.sae.steps import collect_sae

run_rule(snakemake, collect_sae)
