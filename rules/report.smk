"""The report: its workflow-level description (report/workflow.rst, rendered from the config) and one-line
wrappers binding ``config`` to repshift.figures.captions (the palette of every figure, the n of each caption).
"""

from repshift.figures import captions as FC


report: "../report/workflow.rst"


def palette():
    return FC.palette_params(config)


def figure_n(figure):
    return FC.figure_n(config, figure)


def figure_labels(figure, kind):
    """Labels of a report entry: which figure, and whether it is the figure (PNG) or its numbers (TSV)."""
    return {"figure": figure.replace("_", " "), "file": kind}
