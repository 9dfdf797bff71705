"""Rule script for `make_fake_cifar100`: see repshift.demo.steps.make_fake_cifar100."""

from repshift.demo.steps import make_fake_cifar100
from repshift.runtime import run_rule

run_rule(snakemake, make_fake_cifar100)
