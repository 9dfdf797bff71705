"""Probe statistics: per task, the summary over every layer (corrected intervals, permutation null)."""


rule summarize_probes:
    """Summarise one task's probe tables: means, corrected intervals over fold-runs, permutation null, p-values."""
    input:
        tables=lambda wc: stats_targets.probe_summary_inputs(config, wc.task),
    output:
        summary=layout.probe_summary(RESULTS, "{task}"),
    log:
        f"{LOGS}/summarize_probes/{{task}}.log",
    params:
        code=step_hash("summarize_probes"),
    message:
        "Summarising the probes of task {wildcards.task}"
    script:
        "../workflow_scripts/summarize_probes.py"
