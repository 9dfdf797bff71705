"""Results paths: built and parsed in formats.layout only; names pinned (they are the on-disk layout)."""

from pathlib import Path

import pytest

from repshift.formats import layout


def test_per_layer_names_are_pinned():
    assert layout.layer_file("a/b", 7) == Path("a/b/layer-7.h5")
    assert layout.codes_file("a/b", "12") == Path("a/b/layer-12.codes.h5")
    assert layout.transfer_file("a", 3) == Path("a/layer-3.transfer.tsv")
    assert layout.transfer_summary("a") == Path("a/transfer.tsv")
    assert layout.probe_table("r", "cats", 4) == "r/probes/cats/layer-4.tsv"
    assert layout.probe_weights("r", "cats", 4) == "r/probes/cats/weights/layer-4"
    assert layout.sae_layer_dir("d", "gs", 25) == "d/saes/gs/layer-25"
    assert layout.sae_feature_table("r", "a", "m", 6, "probe") == "r/sae_features/a/m/layer-6.probe.tsv"


def test_wildcards_pass_through_builders():
    assert layout.probe_table("r", "{task}", "{layer}") == "r/probes/{task}/layer-{layer}.tsv"
    assert layout.sae_layer_dir("d", "{sae}", "{layer}") == "d/saes/{sae}/layer-{layer}"


@pytest.mark.parametrize(
    "path",
    [
        layout.layer_file("x", 11),
        layout.codes_file("x", 11),
        layout.transfer_file("x", 11),
        layout.probe_table("r", "t", 11),
        layout.probe_weights("r", "t", 11),
        layout.sae_feature_table("r", "a", "m", 11, "class_features"),
    ],
)
def test_layer_of_round_trips(path):
    assert layout.layer_of(path) == 11


@pytest.mark.parametrize(
    "bad", ["x/transfer.tsv", "x/layer-.h5", "x/layer-a.h5", "x/layers-3.h5", "x/layer-3"[:-2]]
)
def test_layer_of_names_the_bad_path(bad):
    with pytest.raises(ValueError, match=r"not a per-layer results name.*layer-<L>") as err:
        layout.layer_of(bad)
    assert bad in str(err.value)


def test_layer_files_exact_suffix_in_layer_order(tmp_path):
    for name in ("layer-10.h5", "layer-2.h5", "layer-2.codes.h5", "layer-10.codes.h5", "transfer.tsv",
                 "layer-2.transfer.tsv", "notes.h5"):  # fmt: skip
        (tmp_path / name).touch()
    acts = layout.layer_files(tmp_path, layout.ACTIVATIONS)
    assert list(acts) == [2, 10]  # numeric, not lexicographic (layer-10 < layer-2 as strings)
    assert acts[10] == tmp_path / "layer-10.h5"
    assert list(layout.layer_files(tmp_path, layout.CODES)) == [2, 10]
    assert layout.layer_files(tmp_path, layout.TRANSFER) == {2: tmp_path / "layer-2.transfer.tsv"}


def test_task_of_probe_table():
    assert layout.task_of_probe_table("r/probes/brightness-vision/layer-3.tsv") == "brightness-vision"
    with pytest.raises(ValueError, match="cross_modal_layers.tsv"):
        layout.task_of_probe_table("r/probes/t/cross_modal_layers.tsv")
