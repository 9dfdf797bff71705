"""Rule script for `build_imagenet_dataset`: see repshift.data.steps.build_imagenet_dataset."""

from repshift.data.steps import build_imagenet_dataset
from repshift.runtime import run_rule

run_rule(snakemake, build_imagenet_dataset)
