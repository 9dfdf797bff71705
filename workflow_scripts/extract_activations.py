"""Rule script for `extract_activations`: see repshift.steps.extract_activations."""

from repshift.runtime import run_rule
from repshift.steps import extract_activations

run_rule(snakemake, extract_activations)
