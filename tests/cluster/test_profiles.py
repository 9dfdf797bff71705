"""The SLURM profiles, checked without a cluster: GPU requests live in profiles (never in rules) and the real
profile turns into the sbatch flags intended (plugin 2.8's own submit-string builder)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GPU_RULES = (
    "extract_activations",
    "encode_sae",
    "spliced_loss",
    "train_vlm_sae",
    "evaluate_vlm_sae",
    "steer_model",
)


def _profile(name: str) -> dict:
    return yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())


class _Resources(dict):
    """Snakemake's job.resources: both .get() and attribute access."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(key) from e


def _resources(profile: dict, rule: str, threads: int, attempt: int = 1) -> tuple[_Resources, int]:
    threads = profile.get("set-threads", {}).get(rule, threads)
    raw = {**profile.get("default-resources", {}), **profile.get("set-resources", {}).get(rule, {})}
    out = _Resources()
    for key, val in raw.items():
        if isinstance(val, str):
            try:
                val = eval(val, {"attempt": attempt, "threads": threads})  # as Snakemake evaluates them
            except (NameError, SyntaxError):
                pass  # a bare word: a string (partition names)
        out[key] = val
    return out, threads


def _sbatch(profile: dict, rule: str, threads: int = 1, attempt: int = 1) -> str:
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    res, threads = _resources(profile, rule, threads, attempt)
    job = SimpleNamespace(resources=res, threads=threads, name=rule)
    params = dict(
        run_uuid="x",
        slurm_logfile="x.log",
        comment_str=rule,
        account="",
        partition=f"-p {res['slurm_partition']}",
        workdir="",
    )
    # the plugin appends the GPU flags to the sbatch call it gets from get_submit_command
    return get_submit_command(job, params) + set_gres_string(job)


def test_rules_request_no_gpus():
    """A cluster without GRES rejects GPU requests: they belong in profiles/, never in rules/."""
    for smk in (ROOT / "rules").glob("*.smk"):
        text = smk.read_text()
        assert not re.search(r"^\s*(gpu|gres|gpu_model|slurm_partition)\s*=", text, re.M), smk


def test_slurm_profile_maps_gpu_rules_to_one_gpu_each():
    p = _profile("slurm")
    assert p["executor"] == "slurm"
    assert p["retries"] >= 1 and p["latency-wait"] >= 10 and p["jobs"] >= 1
    d = p["default-resources"]
    for key in ("slurm_partition", "mem_mb", "runtime", "cpus_per_task"):
        assert key in d, key
    assert "gpu" not in d and "gres" not in d, "CPU jobs must not ask for GPUs"
    for rule in GPU_RULES:
        r = p["set-resources"][rule]
        assert r["gpu"] == 1, rule
        assert r["slurm_partition"] != d["slurm_partition"], rule
        assert {"mem_mb", "runtime"} <= set(r), rule


@pytest.mark.parametrize("rule", GPU_RULES)
def test_slurm_profile_gpu_sbatch_flags(rule):
    p = _profile("slurm")
    call = _sbatch(p, rule, threads=2)
    assert "--gpus=1" in call
    assert f"-p {p['set-resources'][rule]['slurm_partition']}" in call
    assert re.search(rf"--cpus-per-task={p['set-threads'][rule]}\b", call)
    assert re.search(r"--mem \d+", call) and re.search(r"-t \d+", call)
    # a retry asks for more memory and time
    mem1, t1 = int(re.search(r"--mem (\d+)", call)[1]), int(re.search(r"-t (\d+)", call)[1])
    call2 = _sbatch(p, rule, threads=2, attempt=2)
    assert int(re.search(r"--mem (\d+)", call2)[1]) > mem1
    assert int(re.search(r"-t (\d+)", call2)[1]) > t1


def test_slurm_profile_cpu_sbatch_flags():
    p = _profile("slurm")
    call = _sbatch(p, "train_probe", threads=2)
    assert "--gpus" not in call and "--gres" not in call
    assert f"-p {p['default-resources']['slurm_partition']}" in call
    assert "--cpus-per-task=2" in call  # the rule's threads


def test_slurm_ci_profile_requests_no_gpus():
    """The CI cluster has no GRES: GPU rules are routed to the `gpu` partition but ask for no GPU."""
    p = _profile("slurm-ci")
    assert p["executor"] == "slurm"
    assert p["slurm-status-command"] == "squeue"
    assert p["configfile"] == "config/demo.yaml" and p["replace-workflow-config"] is True
    for rule in GPU_RULES:
        r = p["set-resources"][rule]
        assert r["slurm_partition"] == "gpu"
        assert not {"gpu", "gres", "gpu_model"} & set(r)
        call = _sbatch(p, rule, threads=2)
        assert "--gpus" not in call and "--gres" not in call and "-p gpu" in call


def _rules_using_a_device() -> set[str]:
    """Rules whose params read config["extraction"] (device, dtype): the ones that run a model or an SAE."""
    found = set()
    for smk in (ROOT / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule )", smk.read_text(), flags=re.M):
            m = re.match(r"rule (\w+):", block)
            if m and 'config["extraction"]' in block:
                found.add(m.group(1))
    return found


def test_every_device_rule_is_a_gpu_rule_in_every_profile():
    assert _rules_using_a_device() == set(GPU_RULES)
    local = _profile("local")["set-resources"]
    slurm = _profile("slurm")["set-resources"]
    ci = _profile("slurm-ci")["set-resources"]
    for rule in GPU_RULES:
        assert local[rule]["gpu"] == 1, rule
        assert slurm[rule]["gpu"] == 1 and slurm[rule]["slurm_partition"] == "gpu", rule
        assert ci[rule]["slurm_partition"] == "gpu", rule
