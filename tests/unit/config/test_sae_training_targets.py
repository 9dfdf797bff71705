"""Which trained-SAE jobs the demo preset asks for (pinned by hand)."""

import yaml

from repshift.config import sae_training as ST


def test_demo_job_list():
    cfg = yaml.safe_load(open("config/demo.yaml"))
    assert ST.trained_jobs(cfg) == [("demo-paligemma", 1), ("demo-paligemma", 3)]
    assert ST.all_vlm_sae_tables(cfg, "eval") == [
        "demo/results/vlm_sae/demo-paligemma/layer-1.eval.tsv",
        "demo/results/vlm_sae/demo-paligemma/layer-3.eval.tsv",
    ]
    assert ST.vlm_sae_figures(cfg, "png")[0] == "demo/results/figs/vlm_sae.png"


def test_no_section_no_jobs():
    assert ST.trained_jobs({"paths": {"results": "r"}}) == []
    assert ST.vlm_sae_figures({"paths": {"results": "r"}}) == []
