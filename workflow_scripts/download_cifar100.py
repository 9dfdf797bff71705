"""Rule script for `download_cifar100`: see repshift.data.steps.download_cifar100."""

from repshift.data.steps import download_cifar100
from repshift.runtime import run_rule

run_rule(snakemake, download_cifar100)
