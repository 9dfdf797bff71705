"""Rule script for `score_cross_layer`: see repshift.probes.steps.score_cross_layer."""

from repshift.probes.steps import score_cross_layer
from repshift.runtime import run_rule

run_rule(snakemake, score_cross_layer)
