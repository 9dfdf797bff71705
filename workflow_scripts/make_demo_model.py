"""Rule script for `make_demo_model`: see repshift.demo.steps.make_demo_model."""

from repshift.demo.steps import make_demo_model
from repshift.runtime import run_rule

run_rule(snakemake, make_demo_model)
