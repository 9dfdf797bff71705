"""Rule script for `compare_sae`: see repshift.sae.steps.compare_sae."""

from repshift.runtime import run_rule
from repshift.sae.steps import compare_sae

run_rule(snakemake, compare_sae)
