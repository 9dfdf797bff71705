"""profiles/default: the workflow profile Snakemake uses when none is named, so that a bare
`snakemake --cores 8 ...` never runs two GPU jobs on one device."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


# the rules that read the extraction device (tests/cluster/test_profiles.py ties this list to the rules)
GPU_RULES = {
    "extract_activations",
    "encode_sae",
    "spliced_loss",
    "train_vlm_sae",
    "evaluate_vlm_sae",
    "steer_model",
}


def _profile(name: str) -> dict:
    return yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())


def test_default_profile_limits_gpu_jobs_like_the_local_profile():
    default, local = _profile("default"), _profile("local")
    assert default["resources"] == ["gpu=1"]
    local_gpu = {r for r, res in local["set-resources"].items() if "gpu" in res}
    default_gpu = {r for r, res in default["set-resources"].items() if res.get("gpu") == 1}
    assert local_gpu == GPU_RULES  # guards this test itself
    assert local_gpu <= default_gpu


def test_a_bare_run_uses_the_default_profile_and_gpu_jobs_ask_for_the_gpu(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [str(BIN / "snakemake"), "-n", "--cores", "2", "--configfile", str(ROOT / "config/demo.yaml")]
    proc = subprocess.run(
        [*cmd, "--directory", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Using workflow specific profile profiles/default" in proc.stdout + proc.stderr
    # every rule has a `message:` (tests/workflow/test_workflow.py), which a dry run prints instead of the rule's
    # block, so the resources are not printed: test_default_profile_limits_gpu_jobs_like_the_local_profile
    # checks the GPU rules' requests in the profile itself
    assert set(re.findall(r"^(?:local)?rule (\w+):$", proc.stdout, re.M)) <= {"all"}
