"""Directions, sparsity and intervals, with numbers computed by hand."""

import numpy as np
import pytest

from repshift.steering import directions as D
from repshift.steering import sparsity
from repshift.steering.measures import t_interval


def test_probe_readout_maps_back_through_the_scaler():
    coef = np.array([[2.0, -4.0]])
    scale = np.array([2.0, 4.0])
    # binary probe, classes [3, 7]: the row points to 7
    np.testing.assert_allclose(
        D.probe_readout(coef, scale, np.array([3, 7]), source=3, target=7), [1.0, -1.0]
    )
    np.testing.assert_allclose(
        D.probe_readout(coef, scale, np.array([3, 7]), source=7, target=3), [-1.0, 1.0]
    )
    multi = np.array([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    np.testing.assert_allclose(D.probe_readout(multi, scale, np.array([0, 1, 2]), 0, 2), [1.5, 1.0])
    with pytest.raises(ValueError, match="labels \\[5\\]"):
        D.probe_readout(multi, scale, np.array([0, 1, 2]), 0, 5)


def test_class_mean_diff_and_code_diff():
    X = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 4.0], [1.0, 6.0], [9.0, 9.0]])
    y = np.array([0, 0, 1, 1, 2])
    np.testing.assert_allclose(D.class_mean_diff(X, y, 0, 1), [0.0, 5.0])
    assert D.largest_code_diff(X, y, 0, 1) == 1
    with pytest.raises(ValueError, match="label 4"):
        D.class_mean_diff(X, y, 0, 4)


def test_directions_round_trip_unit_norm_and_seeded_random(tmp_path):
    dirs = D.build_directions({"probe": np.array([3.0, 4.0, 0.0])}, n_random=2, seed=5, meta={"layer": 2})
    assert dirs.names == ("probe", "random-0", "random-1")
    np.testing.assert_allclose(dirs["probe"], [0.6, 0.8, 0.0])
    np.testing.assert_allclose(np.linalg.norm(dirs.directions_KD, axis=1), 1.0)
    assert dirs.meta["raw_norms"]["probe"] == 5.0
    dirs.save(tmp_path / "layer-2")
    back = D.Directions.load(tmp_path / "layer-2")
    assert back.names == dirs.names and back.meta["layer"] == 2
    np.testing.assert_allclose(back.directions_KD, dirs.directions_KD, atol=1e-7)
    again = D.build_directions({"probe": np.array([3.0, 4.0, 0.0])}, n_random=2, seed=5)
    np.testing.assert_array_equal(again.directions_KD, dirs.directions_KD)
    with pytest.raises(ValueError, match="norm 0"):
        D.build_directions({"mean-diff": np.zeros(3)}, n_random=0, seed=0)


def test_omp_counts_atoms_by_hand():
    # dictionary: the three axes of R^3 (scaled rows: OMP normalises them)
    W = np.diag([2.0, 3.0, 0.5])
    v = np.array([3.0, 0.0, 4.0])  # needs the 3rd atom (cos 0.8) then the 1st (cos 1)
    path = sparsity.omp_cosine_path(W, v, 3)
    np.testing.assert_allclose(path, [0.8, 1.0, 1.0], atol=1e-12)
    assert sparsity.atoms_to_reach(path, 0.8) == 1
    assert sparsity.atoms_to_reach(path, 0.9) == 2
    assert np.isnan(sparsity.atoms_to_reach(np.array([0.1, 0.2]), 0.9))


def test_t_interval_by_hand():
    mean, lo, hi = t_interval(np.array([1.0, 3.0]))
    # sd = sqrt(2), sem = 1, t_{0.975, 1} = 12.7062
    assert mean == 2.0
    np.testing.assert_allclose([lo, hi], [2 - 12.7062047, 2 + 12.7062047], rtol=1e-6)
    assert np.isnan(t_interval(np.array([1.0]))[1])
