"""Rule script for `make_synthetic_coco`: see repshift.demo.steps.make_synthetic_coco."""

from repshift.demo.steps import make_synthetic_coco
from repshift.runtime import run_rule

run_rule(snakemake, make_synthetic_coco)
