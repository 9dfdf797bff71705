"""Rule script for `class_features`: see repshift.steps.class_features."""

from repshift.runtime import run_rule
from repshift.steps import class_features

run_rule(snakemake, class_features)
