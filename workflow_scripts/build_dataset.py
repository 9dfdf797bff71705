"""Rule script for `build_dataset`: see repshift.steps.build_dataset."""

from repshift.runtime import run_rule
from repshift.steps import build_dataset

run_rule(snakemake, build_dataset)
