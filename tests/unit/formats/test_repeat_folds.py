"""Outer-CV repeats: fold columns in the manifest, carried through the activations HDF5 index."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from repshift.formats import manifest
from repshift.formats.activations_h5 import ActivationWriter, read_activations, write_index


def _manifest(n_groups: int = 12, rows_per_group: int = 2) -> pd.DataFrame:
    groups = np.repeat(np.arange(n_groups), rows_per_group)
    labels = groups % 2
    n = groups.size
    df = pd.DataFrame(
        {
            "example_id": [f"e{i}" for i in range(n)],
            "image_id": groups,
            "group": groups,
            "modality": np.tile(["text", "image"], n // 2),
            "file": "",
            "text": "",
            "captions": "",
            "label": labels,
            "label_name": np.where(labels == 1, "dog", "cat"),
            "transform": "",
        }
    )
    df["fold"] = manifest.assign_folds(labels, groups, n_folds=3, seed=7)
    return df


def test_fold_columns_order_and_gaps():
    assert manifest.fold_columns(["x", "fold_r2", "fold", "fold_r1"]) == ["fold", "fold_r1", "fold_r2"]
    assert manifest.fold_columns(["fold"]) == ["fold"]
    with pytest.raises(ValueError, match="without gaps"):
        manifest.fold_columns(["fold", "fold_r2"])


def test_add_repeat_folds_draws_grouped_stratified_distinct_folds():
    df = _manifest()
    out = manifest.add_repeat_folds(df, repeats=3, seed=7)
    assert list(out.columns[-2:]) == ["fold_r1", "fold_r2"]
    np.testing.assert_array_equal(out["fold"], df["fold"])  # repeat 0 is the stored fold, unchanged
    for col in ("fold_r1", "fold_r2"):
        assert (out.groupby("group")[col].nunique() == 1).all()  # grouped: both rows of an image together
        # stratified: 12 groups x 2 rows, 6 per label, 3 folds -> 2 groups (4 rows) of each label per fold
        counts = out.groupby([col, "label"]).size()
        assert (counts == 4).all(), counts
    # the repeats differ from each other and from repeat 0 (different seeds)
    assert not np.array_equal(out["fold"], out["fold_r1"]) and not np.array_equal(
        out["fold_r1"], out["fold_r2"]
    )
    # deterministic
    np.testing.assert_array_equal(manifest.add_repeat_folds(df, repeats=3, seed=7)["fold_r2"], out["fold_r2"])
    assert list(manifest.add_repeat_folds(df, repeats=1, seed=7).columns) == list(df.columns)
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        manifest.add_repeat_folds(df, repeats=0, seed=7)


def test_check_manifest_catches_a_leak_in_a_repeat_column():
    df = manifest.add_repeat_folds(_manifest(), repeats=2, seed=7)
    df.loc[0, "fold_r1"] = (df.loc[1, "fold_r1"] + 1) % 3  # rows 0 and 1 share group 0
    with pytest.raises(ValueError, match="group 0 appears in more than one fold of 'fold_r1'"):
        manifest.check_manifest(df)


def test_repeat_folds_round_trip_through_manifest_and_activation_index(tmp_path):
    path = tmp_path / "d.tsv"
    manifest.write_manifest(_manifest(), {"seed": 7}, path)
    manifest.add_repeat_folds_file(path, repeats=3, seed=7)
    df, meta = manifest.read_manifest(path)
    assert meta["repeats"] == 3 and df["fold_r2"].dtype == np.int64
    with h5py.File(tmp_path / "layer-0.h5", "w") as f:
        write_index(f, df, {"layer": 0, "d_model": 4})
        ActivationWriter(f, n_examples=len(df), d_model=4, store_dtype="float16", tokens=False)
    acts = read_activations(tmp_path / "layer-0.h5")
    assert acts.repeats == 3
    np.testing.assert_array_equal(acts.folds_RN, df[["fold", "fold_r1", "fold_r2"]].to_numpy().T)
    np.testing.assert_array_equal(acts.repeat_folds(2, np.array([0, 5])), acts.folds_RN[:2, [0, 5]])
    with pytest.raises(ValueError, match="stores 3 outer-CV repeat"):
        acts.repeat_folds(4)


def test_old_activation_files_read_as_one_repeat(tmp_path):
    with h5py.File(tmp_path / "old.h5", "w") as f:
        write_index(f, _manifest(), {"layer": 0, "d_model": 4})  # a manifest without repeat columns
    acts = read_activations(tmp_path / "old.h5")
    assert acts.repeats == 1
    np.testing.assert_array_equal(acts.folds_RN[0], acts.fold)
    with pytest.raises(ValueError, match="rebuild the dataset manifest"):
        acts.repeat_folds(3)
