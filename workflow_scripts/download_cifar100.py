"""Rule script for `download_cifar100`: see repshift.steps.download_cifar100."""

from repshift.runtime import run_rule
from repshift.steps import download_cifar100

run_rule(snakemake, download_cifar100)
