"""Rule script for `make_demo_model`: see repshift.steps.make_demo_model."""

from repshift.runtime import run_rule
from repshift.steps import make_demo_model

run_rule(snakemake, make_demo_model)
