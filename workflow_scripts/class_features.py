"""Rule script for `class_features`: see repshift.sae.steps.class_features."""

from repshift.runtime import run_rule
from repshift.sae.steps import class_features

run_rule(snakemake, class_features)
