"""Rule script for `train_demo_sae`: see repshift.demo.steps.train_demo_sae."""

from repshift.demo.steps import train_demo_sae
from repshift.runtime import run_rule

run_rule(snakemake, train_demo_sae)
