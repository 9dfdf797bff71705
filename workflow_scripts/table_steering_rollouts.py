"""Rule script for `table_steering_rollouts`: see repshift.steering.steps.table_steering_rollouts."""

from repshift.runtime import run_rule
from repshift.steering.steps import table_steering_rollouts

run_rule(snakemake, table_steering_rollouts)
