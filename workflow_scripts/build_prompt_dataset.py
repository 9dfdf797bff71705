"""Rule script for `build_prompt_dataset`: see repshift.data.steps.build_prompt_dataset."""

from repshift.data.steps import build_prompt_dataset
from repshift.runtime import run_rule

run_rule(snakemake, build_prompt_dataset)
