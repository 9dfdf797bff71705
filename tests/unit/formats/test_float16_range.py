"""ActivationWriter: float16 storage is upgraded to float32 when values leave float16's finite range."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest

from repshift.formats.activations_h5 import POOLINGS, UPGRADED_ATTR, ActivationWriter


def _pooled(value_ND: np.ndarray) -> dict[str, np.ndarray]:
    return {name: value_ND for name in POOLINGS}


def test_in_range_values_stay_float16(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        w = ActivationWriter(f, n_examples=2, d_model=3, store_dtype="float16", tokens=False)
        w.write_batch(np.array([0, 1]), _pooled(np.full((2, 3), 65504.0)), np.ones(2), np.zeros(2))
        assert f["pooled/mean"].dtype == np.float16 and UPGRADED_ATTR not in f.attrs
        np.testing.assert_array_equal(f["pooled/mean"][...], np.full((2, 3), 65504.0))


def test_1e5_upgrades_the_layer_to_float32_and_keeps_earlier_rows(tmp_path, caplog):
    with h5py.File(tmp_path / "a.h5", "w") as f, caplog.at_level(logging.WARNING):
        w = ActivationWriter(f, n_examples=3, d_model=2, store_dtype="float16", tokens=True)
        w.write_batch(np.array([0]), _pooled(np.array([[1.5, -2.0]])), np.ones(1), np.zeros(1))
        w.append_tokens(0, np.array([[0.25, 3.0]]), np.array([2]), np.array([7]))
        w.write_batch(np.array([2, 1]), _pooled(np.array([[1e5, 0.0], [-3.0, 4.0]])), np.ones(2), np.zeros(2))
        w.append_tokens(1, np.array([[1e5, 1.0]]), np.array([2]), np.array([8]))
        w.append_tokens(2, np.array([[2.0, 1.0]]), np.array([2]), np.array([9]))
        w.finish()
        for name in [f"pooled/{p}" for p in POOLINGS] + ["tokens/acts"]:
            assert f[name].dtype == np.float32, name
        # the row written before the upgrade survives; 1e5 is stored exactly, not as inf
        np.testing.assert_array_equal(f["pooled/mean"][...], [[1.5, -2.0], [-3.0, 4.0], [1e5, 0.0]])
        np.testing.assert_array_equal(f["tokens/acts"][...], [[0.25, 3.0], [1e5, 1.0], [2.0, 1.0]])
        assert "|x| = 100000 > 65504" in f.attrs[UPGRADED_ATTR]
    assert "layer stored as float32" in caplog.text


def test_nan_raises_naming_the_file(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        w = ActivationWriter(f, n_examples=1, d_model=2, store_dtype="float16", tokens=False)
        with pytest.raises(ValueError, match=r"NaN activations for layer file .*a\.h5"):
            w.write_batch(np.array([0]), _pooled(np.array([[np.nan, 0.0]])), np.ones(1), np.zeros(1))
