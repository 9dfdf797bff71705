"""Rule script for `build_cifar100_dataset`: see repshift.data.steps.build_cifar100_dataset."""

from repshift.data.steps import build_cifar100_dataset
from repshift.runtime import run_rule

run_rule(snakemake, build_cifar100_dataset)
