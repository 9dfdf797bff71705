"""Rule script for `steer_model`: see repshift.steering.steps.steer_model."""

from repshift.runtime import run_rule
from repshift.steering.steps import steer_model

run_rule(snakemake, steer_model)
