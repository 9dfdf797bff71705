"""Rule script for `download_coco`: see repshift.data.steps.download_coco."""

from repshift.data.steps import download_coco
from repshift.runtime import run_rule

run_rule(snakemake, download_coco)
