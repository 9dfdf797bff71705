"""Rule script for `evaluate_vlm_sae`: see repshift.sae.steps.evaluate_vlm_sae."""

from repshift.runtime import run_rule
from repshift.sae.steps import evaluate_vlm_sae

run_rule(snakemake, evaluate_vlm_sae)
