"""Rule script for `plot_contact_sheet`: see repshift.figures.steps.plot_contact_sheet."""

from repshift.figures.steps import plot_contact_sheet
from repshift.runtime import run_rule

run_rule(snakemake, plot_contact_sheet)
