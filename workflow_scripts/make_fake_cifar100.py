"""Rule script for `make_fake_cifar100`: see repshift.steps.make_fake_cifar100."""

from repshift.runtime import run_rule
from repshift.steps import make_fake_cifar100

run_rule(snakemake, make_fake_cifar100)
