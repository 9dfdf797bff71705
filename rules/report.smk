"""The report: its workflow-level description (report/workflow.rst, rendered from the config) and one-line
wrappers binding ``config`` to repshift.figures.captions (the palette of every figure, the n of each caption).
"""


report: "../report/workflow.rst"
