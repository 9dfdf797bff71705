"""Rule script for `score_cross_layer`: see repshift.steps.score_cross_layer."""

from repshift.runtime import run_rule
from repshift.steps import score_cross_layer

run_rule(snakemake, score_cross_layer)
