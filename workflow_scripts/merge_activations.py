"""Rule script for `merge_activations`: see repshift.models.steps.merge_activations."""

from repshift.models.steps import merge_activations
from repshift.runtime import run_rule

run_rule(snakemake, merge_activations)
