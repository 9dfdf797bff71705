"""Provenance block and code hashes: an edit reruns exactly the steps whose code (found from imports) changed."""

import datetime as dt
import hashlib
import shutil
from pathlib import Path

import pytest

import repshift
from repshift.formats.provenance import config_hash, module_code_hash, provenance, step_code_hash

PACKAGE = Path(repshift.__file__).parent


def test_provenance_fields():
    p = provenance({"b": [1, 2], "a": "x"})
    assert set(p) == {"created", "versions", "config_hash", "layer_convention"}
    created = dt.datetime.fromisoformat(p["created"])
    assert created.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 60
    assert p["versions"]["repshift"] == repshift.__version__
    assert {"python", "torch", "transformers", "sae-lens", "numpy", "h5py"} <= set(p["versions"])
    # sha256 of the canonical JSON (sorted keys, no spaces), first 16 hex digits
    assert p["config_hash"] == hashlib.sha256(b'{"a":"x","b":[1,2]}').hexdigest()[:16]
    assert p["layer_convention"] == repshift.LAYER_CONVENTION
    assert provenance()["config_hash"] == hashlib.sha256(b"{}").hexdigest()[:16]


def test_config_hash_ignores_key_order_not_values():
    assert config_hash({"a": 1, "b": {"c": 2, "d": 3}}) == config_hash({"b": {"d": 3, "c": 2}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


@pytest.fixture()
def package(tmp_path):
    """A copy of the repshift package to edit."""
    root = tmp_path / "repshift"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _hashes(root):
    return {s: step_code_hash(s, root) for s in ("train_probe", "sae_feature_probe", "compare_sae")}


def test_copy_hashes_like_the_package(package):
    assert _hashes(package) == _hashes(PACKAGE)


def test_editing_probe_suite_reruns_train_probe_only(package):
    before = _hashes(package)
    with open(package / "probes/suite.py", "a") as f:
        f.write("\n# an edit\n")
    after = _hashes(package)
    assert after["train_probe"] != before["train_probe"]
    assert after["sae_feature_probe"] == before["sae_feature_probe"]
    assert after["compare_sae"] == before["compare_sae"]


def test_editing_class_features_reruns_sae_feature_probe_only(package):
    before = _hashes(package)
    with open(package / "sae/class_features.py", "a") as f:
        f.write("\n# an edit\n")
    after = _hashes(package)
    assert after["sae_feature_probe"] != before["sae_feature_probe"]
    assert after["train_probe"] == before["train_probe"]


def test_a_new_helper_counts_only_once_the_step_calls_it(package):
    steps = package / "probes/steps.py"
    before = _hashes(package)
    source = steps.read_text() + "\n\ndef _new_helper():\n    return 1\n"
    steps.write_text(source)
    assert _hashes(package)["train_probe"] == before["train_probe"]  # defined, never called
    first = "wc = wildcards or {}\n"  # first statement of train_probe's body
    assert source.index(first) < source.index("def score_cross_layer")
    steps.write_text(source.replace(first, "_new_helper()\n    " + first, 1))
    after = _hashes(package)
    assert after["train_probe"] != before["train_probe"]
    assert after["sae_feature_probe"] == before["sae_feature_probe"]


def test_unknown_step_names_the_folder():
    with pytest.raises(KeyError, match="no step 'train_probes' in repshift/\\*/steps.py"):
        step_code_hash("train_probes")


def test_module_code_hash_follows_imports():
    assert module_code_hash("sae.encode") != module_code_hash("probes.cv")
    assert len(module_code_hash("formats.layout")) == 16


def test_lazy_module_references_count_as_imports(tmp_path):
    # the family table names demo builders as "repshift.demo.qwen2_vl:build_demo_qwen2_vl" strings, imported at run
    # time: editing such a builder must still rerun make_demo_model, but never a real run's extraction
    import shutil

    import repshift
    from repshift.formats.provenance import step_code_hash

    copy = tmp_path / "repshift"
    shutil.copytree(Path(repshift.__file__).parent, copy)
    before = {
        s: step_code_hash(s, root=copy) for s in ("make_demo_model", "train_probe", "extract_activations")
    }
    builder = copy / "demo" / "qwen2_vl.py"
    builder.write_text(builder.read_text() + "\n# edited\n")
    after = {
        s: step_code_hash(s, root=copy) for s in ("make_demo_model", "train_probe", "extract_activations")
    }
    assert after["make_demo_model"] != before["make_demo_model"]
    assert after["train_probe"] == before["train_probe"]
    assert after["extract_activations"] == before["extract_activations"]
