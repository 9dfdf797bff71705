"""The conda environment file matches pyproject.toml's pins, and no rule asks for a per-rule environment."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_env_file_pins_are_pyprojects():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs/repshift.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(p for p in pip if not p.startswith("-e")) == sorted(deps)
    assert "-e .." in pip  # the package itself, resolved from envs/ (conda runs pip from the file's folder)
    assert "python=3.11" in env["dependencies"]


def test_rules_run_in_the_one_environment():
    # conda: directives were removed (a relative `-e ../` breaks in Snakemake's copy under .snakemake/conda/)
    for smk in [ROOT / "Snakefile", *(ROOT / "rules").glob("*.smk")]:
        assert not re.search(r"^\s+conda:", smk.read_text(), re.M), smk.name
    assert sorted(p.name for p in (ROOT / "envs").iterdir()) == ["repshift.yaml"]
