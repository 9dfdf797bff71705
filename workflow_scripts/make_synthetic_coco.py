"""Rule script for `make_synthetic_coco`: see repshift.steps.make_synthetic_coco."""

from repshift.runtime import run_rule
from repshift.steps import make_synthetic_coco

run_rule(snakemake, make_synthetic_coco)
