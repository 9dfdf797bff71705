"""Rule script for `build_prompt_dataset`: see repshift.steps.build_prompt_dataset."""

from repshift.runtime import run_rule
from repshift.steps import build_prompt_dataset

run_rule(snakemake, build_prompt_dataset)
