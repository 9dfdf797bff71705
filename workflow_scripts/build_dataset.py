"""Rule script for `build_dataset`: see repshift.data.steps.build_dataset."""

from repshift.data.steps import build_dataset
from repshift.runtime import run_rule

run_rule(snakemake, build_dataset)
