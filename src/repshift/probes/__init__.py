"""Linear probes: the one nested-CV engine, the probe suite, saved probes, and summaries with intervals."""
