"""Rule script for `fetch_sae`: see repshift.sae.steps.fetch_sae."""

from repshift.runtime import run_rule
from repshift.sae.steps import fetch_sae

run_rule(snakemake, fetch_sae)
