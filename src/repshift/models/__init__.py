"""Models: the family table, the adapter that loads and runs them, token handling, and activation extraction."""
