"""Rule script for `build_cifar100_dataset`: see repshift.steps.build_cifar100_dataset."""

from repshift.runtime import run_rule
from repshift.steps import build_cifar100_dataset

run_rule(snakemake, build_cifar100_dataset)
