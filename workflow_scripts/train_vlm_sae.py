"""Rule script for `train_vlm_sae`: see repshift.sae.steps.train_vlm_sae."""

from repshift.runtime import run_rule
from repshift.sae.steps import train_vlm_sae

run_rule(snakemake, train_vlm_sae)
