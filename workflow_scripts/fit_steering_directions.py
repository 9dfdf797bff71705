"""Rule script for `fit_steering_directions`: see repshift.steering.steps.fit_steering_directions."""

from repshift.runtime import run_rule
from repshift.steering.steps import fit_steering_directions

run_rule(snakemake, fit_steering_directions)
