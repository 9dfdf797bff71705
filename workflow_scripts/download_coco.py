"""Rule script for `download_coco`: see repshift.steps.download_coco."""

from repshift.runtime import run_rule
from repshift.steps import download_coco

run_rule(snakemake, download_coco)
