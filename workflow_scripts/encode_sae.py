"""Rule script for `encode_sae`: see repshift.sae.steps.encode_sae."""

from repshift.runtime import run_rule
from repshift.sae.steps import encode_sae

run_rule(snakemake, encode_sae)
