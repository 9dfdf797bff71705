"""Rule script for `merge_activations`: see repshift.steps.merge_activations."""

from repshift.runtime import run_rule
from repshift.steps import merge_activations

run_rule(snakemake, merge_activations)
