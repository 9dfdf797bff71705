"""Rule script for `train_demo_sae`: see repshift.steps.train_demo_sae."""

from repshift.runtime import run_rule
from repshift.steps import train_demo_sae

run_rule(snakemake, train_demo_sae)
