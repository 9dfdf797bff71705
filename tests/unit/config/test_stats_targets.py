"""Which statistics jobs exist (repshift.config.stats_targets), pinned for the demo, and the new config keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from repshift.config import stats_targets as ST

ROOT = Path(__file__).resolve().parents[3]


def _load(name):
    cfg = yaml.safe_load((ROOT / name).read_text())
    validate(cfg, str(ROOT / "rules" / "config.schema.yaml"))
    return cfg


def test_demo_summarize_probes_jobs():
    demo = _load("config/demo.yaml")
    assert ST.probe_summaries(demo) == [
        "demo/results/probes/categories/summary.tsv",
        "demo/results/probes/modality/summary.tsv",
        "demo/results/probes/brightness/summary.tsv",
        "demo/results/probes/brightness-vision/summary.tsv",
    ]
    inputs = ST.probe_summary_inputs(demo, "brightness-vision")
    assert inputs == [f"demo/results/probes/brightness-vision/layer-{i}.tsv" for i in (0, 1)]
    settings = demo["probes"]["settings"]
    assert (settings["repeats"], settings["permutations"], settings["permutation_c"]) == (2, 20, "fixed")


def test_schema_defaults_for_the_statistics_keys():
    real = _load("config.yaml")
    assert real["probes"]["settings"]["repeats"] == 3 and real["probes"]["settings"]["permutations"] == 100
    assert real["stats"] == {"bootstrap": 200} and real["figures"] == {"min_examples": 50}


def test_schema_rejects_bad_statistics_keys():
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["probes"]["settings"]["permutation_c"] = "best"
    with pytest.raises(Exception, match="permutation_c|best"):
        validate(cfg, str(ROOT / "rules" / "config.schema.yaml"))
