"""Rule script for `encode_sae`: see repshift.steps.encode_sae."""

from repshift.runtime import run_rule
from repshift.steps import encode_sae

run_rule(snakemake, encode_sae)
