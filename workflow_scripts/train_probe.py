"""Rule script for `train_probe`: see repshift.probes.steps.train_probe."""

from repshift.probes.steps import train_probe
from repshift.runtime import run_rule

run_rule(snakemake, train_probe)
