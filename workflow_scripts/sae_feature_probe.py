"""Rule script for `sae_feature_probe`: see repshift.sae.steps.sae_feature_probe."""

from repshift.runtime import run_rule
from repshift.sae.steps import sae_feature_probe

run_rule(snakemake, sae_feature_probe)
