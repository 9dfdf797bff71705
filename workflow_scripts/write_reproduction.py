"""Rule script for `write_reproduction`: see repshift.figures.steps.write_reproduction."""

from repshift.figures.steps import write_reproduction
from repshift.runtime import run_rule

run_rule(snakemake, write_reproduction)
