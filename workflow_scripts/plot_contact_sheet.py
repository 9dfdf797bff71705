"""Rule script for `plot_contact_sheet`: see repshift.steps.plot_contact_sheet."""

from repshift.runtime import run_rule
from repshift.steps import plot_contact_sheet

run_rule(snakemake, plot_contact_sheet)
