"""Rule script for `extract_activations`: see repshift.models.steps.extract_activations."""

from repshift.models.steps import extract_activations
from repshift.runtime import run_rule

run_rule(snakemake, extract_activations)
