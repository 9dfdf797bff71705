"""Rule script for `fetch_sae`: see repshift.steps.fetch_sae."""

from repshift.runtime import run_rule
from repshift.steps import fetch_sae

run_rule(snakemake, fetch_sae)
