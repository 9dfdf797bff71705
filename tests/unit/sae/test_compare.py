"""Dictionary comparison invariants: self-comparison, permutation, random baseline, code correlation."""

import numpy as np
import pytest

from repshift.sae.compare import code_correlation, compare_dictionaries, max_cosine, one_to_one


def _dict(n=24, d=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def test_self_comparison_gives_max_cosine_one_and_a_perfect_matching():
    W = _dict()
    np.testing.assert_allclose(max_cosine(W, W), 1.0)
    ia, ib, cos = one_to_one(W, W)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_allclose(cos, 1.0)


def test_permuted_and_rescaled_decoder_matches_exactly():
    W = _dict(seed=1)
    perm = np.random.default_rng(2).permutation(len(W))
    B = W[perm] * np.random.default_rng(3).uniform(0.5, 3, size=(len(W), 1))  # row norms do not matter
    ia, ib, cos = one_to_one(W, B)
    np.testing.assert_array_equal(perm[ib], ia)  # row i of A matched to the row of B that holds it
    np.testing.assert_allclose(cos, 1.0)
    metrics, latents = compare_dictionaries(W, B, thresholds=(0.9,))
    assert metrics["frac_max_cos_above_0.9"] == 1.0
    assert metrics["one_to_one_frac_above_0.9"] == 1.0
    # a random dictionary in 8 dimensions sits far below 1 on average
    assert metrics["random_max_cos_mean"] < 0.95
    np.testing.assert_array_equal(perm[latents["matched"].to_numpy()], np.arange(len(W)))


def test_max_cosine_by_hand():
    A = np.array([[1.0, 0.0], [0.0, 2.0]])
    B = np.array([[1.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(max_cosine(A, B), [np.sqrt(0.5), np.sqrt(0.5)])


def test_widths_must_match():
    with pytest.raises(ValueError, match="different widths"):
        max_cosine(_dict(d=8), _dict(d=9))


def test_code_correlation_finds_the_same_latent_and_ignores_silent_ones():
    rng = np.random.default_rng(0)
    a = np.maximum(rng.standard_normal((50, 3)), 0)
    b = np.concatenate([2 * a[:, [2]], np.zeros((50, 1)), rng.standard_normal((50, 1))], axis=1)
    a[:, 1] = 0.0
    best = code_correlation(a, b)
    assert best[2] == pytest.approx(1.0)
    assert np.isnan(best[1])
    assert best[0] < 0.9
