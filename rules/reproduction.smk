"""The reproduction table: published numbers beside this run's (README, 'Reproduction')."""


rule write_reproduction:
    """Write results/reproduction.tsv: each published number, repshift's counterpart, where, and why they differ."""
    input:
        T.default_targets(config),
    output:
        tsv=f"{RESULTS}/reproduction.tsv",
    log:
        f"{LOGS}/write_reproduction/reproduction.log",
    params:
        results=lambda wc, output: str(Path(output.tsv).parent),
        code=step_hash("write_reproduction"),
    message:
        "Comparing the published numbers with this run's"
    script:
        "../workflow_scripts/write_reproduction.py"
