"""Figures: the shared style, then one module per figure family."""
