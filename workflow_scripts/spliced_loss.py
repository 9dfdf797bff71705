"""Rule script for `spliced_loss`: see repshift.sae.steps.spliced_loss."""

from repshift.runtime import run_rule
from repshift.sae.steps import spliced_loss

run_rule(snakemake, spliced_loss)
