"""Which steering jobs the demo preset asks for (pinned by hand)."""

from pathlib import Path

import yaml

from repshift.config import steering as S

ROOT = Path(__file__).resolve().parents[3]


def _demo():
    return yaml.safe_load((ROOT / "config/demo.yaml").read_text())


def test_demo_steering_jobs_are_pinned():
    cfg = _demo()
    assert S.steering_jobs(cfg) == [
        ("demo-paligemma", "cat-dog", 2),
        ("demo-paligemma", "cat-dog", 4),
        ("demo-llm", "cat-dog", 2),
        ("demo-llm", "cat-dog", 4),
    ]
    assert S.write_layers(cfg, "demo-llm", 2) == [2, 1, 3]
    assert S.write_layers(cfg, "demo-llm", 5) == [5, 4]  # block 6 does not exist
    assert S.readout_layers(cfg, 4) == [4, 5]
    assert S.all_steering_tables(cfg)[0] == "demo/results/steering/demo-paligemma/cat-dog/layer-2.tsv"
    assert S.steering_targets(cfg) == [
        "demo/results/figs/steering.pdf",
        "demo/results/figs/steering_rollouts.html",
    ]
    inputs = S.steer_inputs(cfg, "demo-llm", "cat-dog", 4)
    assert inputs["directions"] == "demo/results/steering/demo-llm/cat-dog/directions/layer-4.safetensors"
    assert inputs["probes"] == [
        "demo/results/probes/categories/weights/layer-4",
        "demo/results/probes/categories/weights/layer-5",
    ]
    # the demo SAE family is one job's folder: the rule depends on it and loads the layer's folder from params
    assert S.direction_inputs(cfg, "demo-llm", 4)["sae"] == "demo/data/saes/demo-sae"
    assert S.sae_layer_dir(cfg, 4) == "demo/data/saes/demo-sae/layer-4"


def test_no_steering_section_means_no_jobs():
    cfg = _demo()
    del cfg["steering"]
    assert S.steering_jobs(cfg) == [] and S.steering_targets(cfg) == []
