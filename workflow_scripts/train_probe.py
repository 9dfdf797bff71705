"""Rule script for `train_probe`: see repshift.steps.train_probe."""

from repshift.runtime import run_rule
from repshift.steps import train_probe

run_rule(snakemake, train_probe)
