"""k-sparse probes: latents chosen from training rows only; an informative latent is found and probed."""

import numpy as np
import pytest

from repshift.probes.cv import ProbeSettings
from repshift.probes.sparse import select_latents, sparse_probe_table


def test_select_latents_by_class_mean_spread():
    X = np.array([[0, 1, 5], [0, 1, 5], [3, 1, 0], [3, 1, 0.0]])
    y = np.array([0, 0, 1, 1])
    np.testing.assert_array_equal(select_latents(X, y, 2), [2, 0])  # spreads 5, 3, 0


def test_selection_uses_training_rows_only():
    """Latent 0 separates the classes only in fold 1, latent 1 only in folds 0 and 2: when fold 1 is the test
    fold, the selection (k=1) must be latent 1; a selection that peeked at the test rows would pick latent 0."""
    rng = np.random.default_rng(0)
    n = 60
    y = np.tile([0, 1], n // 2)
    folds = np.repeat([0, 1, 2], n // 3)
    X = rng.uniform(0, 0.1, size=(n, 4))
    test = folds == 1
    X[test, 0] += 100 * y[test]  # huge spread, test rows only
    X[~test, 1] += 1 * y[~test]
    settings = ProbeSettings(c_grid=(1.0,), inner_folds=2, seeds=(0,), control=False)
    table = sparse_probe_table(X, X, y, folds, ks=[1], settings=settings)
    chosen = table[(table["probe"] == "sae-sparse") & (table["fold"] == 1)]["latents"].item()
    assert chosen == "1"
    # with fold 1 among the training rows, latent 0's spread (about 50) wins: selection follows the training rows
    others = table[(table["probe"] == "sae-sparse") & (table["fold"] != 1)]["latents"]
    assert list(others) == ["0", "0"]
    dense = table[table["probe"] == "dense"]
    assert set(dense["k"]) == {4}


def test_needs_two_classes():
    with pytest.raises(ValueError, match="two classes"):
        select_latents(np.ones((3, 2)), np.zeros(3), 1)
