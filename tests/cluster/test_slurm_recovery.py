"""Failure recovery on a real SLURM: a GPU-rule job SIGKILLed mid-run is retried (profile `retries`) or resumed
by a rerun, the results equal a local run's, and a killed job's partial outputs never pass as complete.

Runs only against the throwaway cluster of scripts/slurm/start_slurm.sh (never a real cluster's queue):
    sudo scripts/slurm/start_slurm.sh && REPSHIFT_SLURM_TEST=1 .venv/bin/python -m pytest -q tests/cluster
or as part of `make test-slurm` (REPSHIFT_SLURM_PYTEST=1 scripts/slurm/run_slurm_test.sh). A few minutes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
MARK = "# written by repshift scripts/slurm/start_slurm.sh"
WORK = Path("build/slurm-test/pytest")  # relative to ROOT, git-ignored
# A small slice of the demo DAG with both GPU rules: synthetic COCO -> dataset -> demo LLM -> demo PaliGemma;
# extract_activations (both) -> train_demo_sae (on the LLM) -> encode_sae (PaliGemma, every layer).
# The victim is PaliGemma's extraction (~10 s of writing HDF5 files here).
TARGET = "results/sae/demo-sae/demo-paligemma/demo-categories"  # encode_sae's output folder
ACTS = "results/activations/demo-paligemma/demo-categories"
VICTIM = "rule_extract_activations_wildcards_demo-paligemma_demo-categories"  # not the short prompt-set jobs
SCRIPT_RE = r"scripts/tmp[^ ]*\.extract_activations\.py"

sys.path.insert(0, str(ROOT / "scripts" / "slurm"))
from compare_results import compare_trees  # noqa: E402


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def _slurm_up() -> bool:
    try:
        return "is UP" in _run(["scontrol", "ping"], timeout=10).stdout
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


def _throwaway_cluster() -> bool:
    conf = Path("/etc/slurm/slurm.conf")
    return conf.exists() and MARK in conf.read_text()


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("REPSHIFT_SLURM_TEST") != "1",
        reason="SLURM test: set REPSHIFT_SLURM_TEST=1 with scripts/slurm/start_slurm.sh running (make test-slurm)",
    ),
]


@pytest.fixture(scope="module", autouse=True)
def _cluster():
    if not _slurm_up():
        pytest.skip("no SLURM controller answers: start one with scripts/slurm/start_slurm.sh")
    if not _throwaway_cluster():
        pytest.skip(
            "SLURM is up but is not the throwaway cluster of start_slurm.sh: not submitting test jobs"
        )


def _paths(out: Path) -> list[str]:
    return ["--config", f"paths={{data: {out}/data, results: {out}/results}}"]


def _snakemake(out: Path, *args: str) -> list[str]:
    # the target goes before --config, which takes every word after it
    return [SNAKEMAKE, str(out / TARGET), *args, *_paths(out)]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}


@pytest.fixture(scope="module")
def reference() -> Path:
    """The same slice run locally (profiles/demo), in run_slurm_test.sh's reference tree: already done there."""
    out = WORK.parent / "local"
    p = _run(_snakemake(out, "--workflow-profile", "profiles/demo", "--cores", "2"), cwd=ROOT, env=_env())
    assert p.returncode == 0, p.stderr[-4000:]
    return ROOT / out


def _fresh(name: str) -> Path:
    out = WORK / name
    shutil.rmtree(ROOT / out, ignore_errors=True)
    (ROOT / WORK).mkdir(parents=True, exist_ok=True)
    (ROOT / WORK / f"{name}.log").unlink(missing_ok=True)
    return out


def _slurm_run(out: Path, *extra: str) -> subprocess.Popen:
    cmd = _snakemake(
        out, "--workflow-profile", "profiles/slurm-ci", "--slurm-logdir", f"{out}/slurm-logs", *extra
    )
    log = open(ROOT / out.parent / f"{out.name}.log", "a")
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT, text=True)


def _job_runs_script(jid: str, pattern: str) -> bool:
    """Does a process of SLURM job ``jid`` have ``pattern`` in its command line (scontrol listpids)?"""
    for line in _run(["scontrol", "listpids", jid]).stdout.splitlines()[1:]:
        try:
            cmd = Path(f"/proc/{line.split()[0]}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        if re.search(pattern, cmd):
            return True
    return False


def _kill_gpu_job_mid_run(proc: subprocess.Popen, out: Path, timeout: float = 600) -> tuple[str, list[str]]:
    """SIGKILL the victim SLURM job while its rule script writes temp files; (job id, files present then)."""
    deadline = time.monotonic() + timeout
    jid = None
    while time.monotonic() < deadline and proc.poll() is None:
        q = _run(["squeue", "-h", "-t", "R", "-o", "%i %k"]).stdout.split("\n")
        ids = [line.split()[0] for line in q if f" {VICTIM}" in line]
        if ids:
            jid = ids[0]
            break
        time.sleep(0.3)
    assert jid, "no extract_activations job ran"
    acts = ROOT / out / ACTS
    present: list[str] = []
    while time.monotonic() < deadline:  # kill while the job's script has temporary outputs open
        assert _run(["squeue", "-h", "-j", jid, "-t", "R"]).stdout.strip(), (
            f"job {jid} ended before it was killed"
        )
        # the output folder, or a hidden temporary sibling of it (written whole, then renamed into place)
        if _job_runs_script(jid, SCRIPT_RE) and acts.parent.exists():
            present = sorted(str(p.relative_to(acts.parent)) for p in acts.parent.rglob("*"))
            if any(".tmp" in name for name in present):
                break
        time.sleep(0.1)
    assert _run(["scancel", "--signal=KILL", jid]).returncode == 0
    return jid, present


def _compare(reference: Path, out: Path):
    n, errors, worst = compare_trees(
        reference / "results", ROOT / out / "results", ["activations", "sae"], h5=True, subset=True
    )
    # 2 models x 6 layers of activations, PaliGemma's codes and transfer tables
    assert n >= 14, f"only {n} files compared"
    assert not errors, "\n".join(errors)


def _assert_nothing_left(out: Path):
    p = _run(
        _snakemake(out, "--workflow-profile", "profiles/demo", "--cores", "1", "-n"), cwd=ROOT, env=_env()
    )
    assert p.returncode == 0 and "Nothing to be done" in p.stdout + p.stderr, (
        p.stdout[-3000:] + p.stderr[-3000:]
    )
    # a SIGKILLed job may leave hidden temporary siblings (it cannot clean up), never files at output paths:
    for f in (ROOT / out / "results").rglob("*"):
        if ".tmp" in f.name:
            assert any(part.startswith(".") for part in f.relative_to(ROOT / out).parts), f


def test_killed_gpu_job_resumes_on_rerun(reference):
    """retries 0: the run fails; the killed job's outputs are not taken as done; a plain rerun completes."""
    out = _fresh("rerun")
    proc = _slurm_run(out, "--retries", "0")
    jid, present = _kill_gpu_job_mid_run(proc, out)
    assert any(".tmp" in name for name in present), present
    assert proc.wait(timeout=600) != 0, "the run should fail when its job is killed and retries are 0"
    log = (ROOT / out.parent / "rerun.log").read_text()
    assert f"SLURM-job '{jid}' failed" in log

    # Partial outputs never pass as complete: the killed job and everything downstream must still run.
    acts = ROOT / out / ACTS
    finals = sorted(p.name for p in acts.glob("layer-*.h5")) if acts.exists() else []
    assert not (ROOT / out / TARGET).exists()
    dry = _run(
        _snakemake(out, "--workflow-profile", "profiles/demo", "--cores", "1", "-n"), cwd=ROOT, env=_env()
    )
    plan = dry.stdout + dry.stderr
    assert re.search(r"extract_activations\s+1", plan), (
        f"killed job not rescheduled (files then: {present}, now: {finals})\n{plan[-3000:]}"
    )

    rerun = _slurm_run(out)
    assert rerun.wait(timeout=900) == 0, (ROOT / out.parent / "rerun.log").read_text()[-5000:]
    _compare(reference, out)
    _assert_nothing_left(out)


def test_killed_gpu_job_is_retried(reference):
    """retries 2 (the profile's): the killed job is resubmitted and the same run completes."""
    out = _fresh("retry")
    proc = _slurm_run(out)
    jid, _ = _kill_gpu_job_mid_run(proc, out)
    assert proc.wait(timeout=900) == 0, (ROOT / out.parent / "retry.log").read_text()[-5000:]
    log = (ROOT / out.parent / "retry.log").read_text()
    assert f"SLURM-job '{jid}' failed" in log
    assert "Trying to restart job" in log
    _compare(reference, out)
    _assert_nothing_left(out)
