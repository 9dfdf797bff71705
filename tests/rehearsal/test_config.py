"""The rehearsal's config: the real config.yaml plus overlay.yaml and loopback archives, valid as a whole."""

import copy
import importlib.util
from pathlib import Path

import pytest
import yaml

from repshift.config.checks import check_config, validate_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def serve_module():
    spec = importlib.util.spec_from_file_location(
        "rehearsal_serve", ROOT / "scripts" / "rehearsal" / "serve.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def archives(tmp_path):
    """Three stand-in 'archives' of known content (checksums only read the bytes)."""
    for name in ("val2017.zip", "annotations_trainval2017.zip", "cifar-100-python.tar.gz"):
        (tmp_path / name).write_bytes(b"abc")
    return tmp_path


def test_merge_is_key_by_key(serve_module):
    base = {"a": {"x": 1, "y": 2}, "b": [1, 2]}
    assert serve_module.merge(base, {"a": {"y": 3}, "b": [9]}) == {"a": {"x": 1, "y": 3}, "b": [9]}
    assert base == {"a": {"x": 1, "y": 2}, "b": [1, 2]}  # the base is not modified


def test_rehearsal_config_downloads_from_loopback_and_validates(serve_module, archives):
    config = serve_module.rehearsal_config(archives, "http://127.0.0.1:1")
    entry = config["coco"]["archives"]["val2017"]
    assert entry["url"] == "http://127.0.0.1:1/zips/val2017.zip"
    # md5("abc") and sha256("abc"), the published test vectors
    assert (entry["size"], entry["md5"]) == (3, "900150983cd24fb0d6963f7d28e17f72")
    assert entry["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert config["cifar100"]["archive"]["url"] == "http://127.0.0.1:1/~kriz/cifar-100-python.tar.gz"
    # the download rules run as for real: no `source: path` stop-gap
    assert (config["coco"]["source"], config["cifar100"]["source"]) == ("download", "download")
    real = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    # the overlay shrinks sizes, never the models, comparisons or tasks; the extracted layers are exactly the
    # blocks some analysis of the real config names, plus the first and the last
    assert real["extraction"]["layers"] == "all"
    named = {0, 25}
    named |= set(real["probes"]["settings"]["curve_layers"])
    named |= {L for s in real["sae_features"].values() for L in s["layers"]}
    named |= {L for m in real["sae_training"]["models"].values() for L in m["layers"]}
    named |= set(real["steering"]["layers"])
    assert config["extraction"]["layers"] == sorted(named) == [0, 6, 10, 12, 17, 18, 25]
    for section in ("models", "comparisons", "saes"):
        assert config[section] == real[section]
    for name, analysis in real["sae_features"].items():  # only the classifier's sizes change
        kept = ("sae", "models", "dataset", "layers", "poolings", "top_n", "binarise", "max_image_fraction")
        assert {k: config["sae_features"][name][k] for k in kept} == {k: analysis[k] for k in kept}
    assert config["probes"]["tasks"] == real["probes"]["tasks"]
    assert config["steering"]["layers"] == real["steering"]["layers"]
    assert config["sae_training"]["models"] == real["sae_training"]["models"]
    assert config["sae_training"]["train"]["tokens"] < real["sae_training"]["train"]["tokens"]
    # a typo in overlay.yaml fails here, not after the stand-ins are built
    validated = validate_config(copy.deepcopy(config), ROOT / "rules" / "config.schema.yaml")
    check_config(validated)


#: preset -> the sections its overlay must leave as they are (models, SAEs and their layers, extraction layers,
#: probe tasks, the analyses), checked key by key below.
PRESETS = ("llava-gemma", "line-of-sight")


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_rehearsal_config_keeps_the_study_and_validates(serve_module, archives, preset):
    config = serve_module.rehearsal_config(
        archives,
        "http://127.0.0.1:1",
        config=f"config/{preset}.yaml",
        overlay=f"scripts/rehearsal/overlay-{preset}.yaml",
        imagenet=f"build/rehearsal-{preset}/imagenet",
    )
    real = yaml.safe_load((ROOT / "config" / f"{preset}.yaml").read_text(encoding="utf-8"))
    assert config["imagenet"]["root"] == f"build/rehearsal-{preset}/imagenet"
    assert config["paths"] == {
        "data": f"build/rehearsal-{preset}/data",
        "results": f"build/rehearsal-{preset}/results",
    }
    assert config["coco"]["archives"]["val2017"]["url"] == "http://127.0.0.1:1/zips/val2017.zip"
    for section in ("models", "saes", "comparisons"):
        assert config[section] == real[section], section
    assert config["extraction"]["layers"] == real["extraction"]["layers"]
    assert config["probes"]["tasks"] == real["probes"]["tasks"]
    for name, dataset in real["datasets"].items():  # the same datasets, sources and modalities
        assert {k: config["datasets"][name].get(k) for k in ("source", "modality")} == {
            k: dataset.get(k) for k in ("source", "modality")
        }
    assert set(config["datasets"]) == set(real["datasets"])
    for name, analysis in real.get("sae_features", {}).items():
        for key in ("sae", "models", "dataset", "layers", "poolings", "top_n", "binarise", "train_fractions"):
            assert config["sae_features"][name].get(key) == analysis.get(key), (name, key)
    if "steering" in real:
        for key in ("task", "models", "layers", "pairs", "directions", "sae"):
            assert config["steering"][key] == real["steering"][key], key
    if "sae_training" in real:
        assert config["sae_training"]["models"] == real["sae_training"]["models"]
        assert config["sae_training"]["train"]["tokens"] < real["sae_training"]["train"]["tokens"]
    assert "cifar100" in config or preset == "line-of-sight"  # no cifar100 section added where there was none
    validated = validate_config(copy.deepcopy(config), ROOT / "rules" / "config.schema.yaml")
    check_config(validated)


def test_preset_overlay_keys_exist_in_the_preset(serve_module):
    """An overlay key the preset lacks would add a section (e.g. a typo'd dataset slug): every overlay dataset,
    SAE-feature analysis and probe task must name one of the preset's."""
    for preset in PRESETS:
        real = yaml.safe_load((ROOT / "config" / f"{preset}.yaml").read_text(encoding="utf-8"))
        overlay = yaml.safe_load(
            (ROOT / "scripts" / "rehearsal" / f"overlay-{preset}.yaml").read_text(encoding="utf-8")
        )
        for section in ("datasets", "sae_features"):
            assert set(overlay.get(section, {})) <= set(real.get(section, {})), (preset, section)
