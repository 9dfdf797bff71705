"""Rule script for `pixel_baseline`: see repshift.probes.steps.pixel_baseline."""

from repshift.probes.steps import pixel_baseline
from repshift.runtime import run_rule

run_rule(snakemake, pixel_baseline)
