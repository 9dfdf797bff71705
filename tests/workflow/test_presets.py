"""The shipped presets (the two source studies and the family examples): each validates against the schema and
the cross-checks, and each plans its whole DAG in a dry run (ImageNet from a generated tree in the standard
layout); without a local ImageNet the dry run stops with one message naming imagenet.root and the layout."""

import pytest
import yaml
from test_workflow import ROOT, job_counts, snakemake

from repshift import config as rcfg
from repshift.config.checks import validate_config
from repshift.demo.imagenet import make_fake_imagenet

SCHEMA = str(ROOT / "rules" / "config.schema.yaml")
PRESETS = {
    "config/llava-gemma.yaml": {
        "extract_activations",
        "train_probe",
        "sae_feature_probe",
        "build_imagenet_dataset",
    },
    "config/line-of-sight.yaml": {
        "extract_activations",
        "train_probe",
        "build_imagenet_dataset",
        "train_vlm_sae",
        "evaluate_vlm_sae",
        "steer_model",
        "table_steering_rollouts",
    },
    "config/examples/qwen2-vl.yaml": {"extract_activations", "train_probe"},
    "config/examples/smolvlm.yaml": {"extract_activations", "train_probe"},
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_validates_and_passes_the_cross_checks(preset):
    cfg = yaml.safe_load((ROOT / preset).read_text())
    validate_config(cfg, SCHEMA)
    rcfg.check_config(cfg)
    assert rcfg.extraction_pairs(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_plans_its_whole_dag(preset, tmp_path):
    imagenet = make_fake_imagenet(tmp_path / "imagenet")
    config = ["--config", f"imagenet={{root: {imagenet}}}"]
    proc = snakemake("-n", "--cores", "8", "--configfile", str(ROOT / preset), "--replace-workflow-config",
                     *config, cwd=tmp_path)  # fmt: skip
    counts = job_counts(proc.stdout)
    assert PRESETS[preset] <= set(counts), counts
    cfg = yaml.safe_load((ROOT / preset).read_text())
    # the SAE-latent figures draw comparisons: a preset without any asks for none (no empty figures)
    assert ("plot_latent_density" in counts) == bool(cfg["comparisons"]), counts


def test_a_missing_imagenet_names_the_key_and_the_layout(tmp_path):
    proc = snakemake("-n", "--cores", "1", "--configfile", str(ROOT / "config/llava-gemma.yaml"),
                     "--replace-workflow-config", cwd=tmp_path, check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (
        "imagenet.root: no data/imagenet/LOC_synset_mapping.txt" in out and "LOC_val_solution.csv" in out
    ), out
    assert not (tmp_path / "data").exists()
