"""A job submitted to a cluster must see the config its submitter saw.

Each SLURM job re-runs `snakemake --configfiles <...> --target-jobs ...` on its node. Snakemake 9.27 passes
`--configfiles` to such jobs but not `--replace-workflow-config` (snakemake/spawn_jobs.py), so with a
`configfile: "config.yaml"` directive a job of the demo preset would see config.yaml merged with the demo config
(more models, SAEs and comparisons: plot_layer_sweep then waits for inputs that no job makes). This compares the
DAG the submitter builds (profiles/demo: replace) with the DAG a spawned job builds (--configfile alone).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
OUT = "build/jobstep-config-check"  # never written: dry runs only


def _job_counts(*args: str) -> dict[str, int]:
    cmd = [
        SNAKEMAKE,
        f"{OUT}/results/figs/layer_sweep.pdf",
        "-n",
        "-F",
        "--quiet",
        "rules",
        "--cores",
        "1",
        *args,
    ]
    cmd += ["--config", f"paths={{data: {OUT}/data, results: {OUT}/results}}"]
    p = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert p.returncode == 0, p.stderr[-3000:]
    table = (p.stdout + p.stderr).split("Job stats:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def test_spawned_jobs_see_the_submitters_config():
    submitter = _job_counts("--workflow-profile", "profiles/demo")
    spawned = _job_counts("--configfile", "config/demo.yaml")  # what a SLURM job is given
    assert spawned == submitter, (
        "a cluster job would build another DAG than its submitter: it merges config.yaml with the demo config "
        "(Snakemake does not pass --replace-workflow-config to spawned jobs). Fix in the Snakefile:\n"
        "    if not workflow.overwrite_configfiles:\n        configfile: 'config.yaml'\n"
        f"submitter: {submitter}\nspawned:   {spawned}"
    )
