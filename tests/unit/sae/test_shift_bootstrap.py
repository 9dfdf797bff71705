"""Bootstrap intervals of the shift metrics, over examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from repshift.sae.codes import SparseCodes
from repshift.sae.metrics import bootstrap_shift_intervals


def _codes_one_token_each(latents: list[int]) -> SparseCodes:
    return SparseCodes(np.array(latents), np.ones(len(latents)), np.arange(len(latents) + 1), 4)


def test_bootstrap_token_cosine_matches_the_binomial_quantiles():
    # 10 examples of one token: 5 identical under both models (cosine 1), 5 on disjoint latents (cosine 0).
    a = _codes_one_token_each([0] * 10)
    b = _codes_one_token_each([0] * 5 + [1] * 5)
    boot = bootstrap_shift_intervals(a, b, np.arange(10), n_boot=2000, seed=0)
    # token_cosine of a resample = (#cosine-1 examples drawn) / 10 ~ Binomial(10, 0.5) / 10:
    # P(X <= 1) = 11/1024 = 0.0107 < 0.025 < P(X <= 2) = 56/1024 = 0.0547 -> 2.5% quantile 0.2, 97.5% 0.8
    assert boot["token_cosine"] == pytest.approx((0.2, 0.8))
    # jaccard equals cosine here (one active latent per token)
    assert boot["jaccard"] == pytest.approx((0.2, 0.8))


def test_bootstrap_resamples_whole_examples():
    # example 0 has 3 identical tokens, example 1 one disjoint token: resampling tokens would give other values
    a = SparseCodes(np.array([0, 0, 0, 0]), np.ones(4), np.arange(5), 4)
    b = SparseCodes(np.array([0, 0, 0, 1]), np.ones(4), np.arange(5), 4)
    boot = bootstrap_shift_intervals(a, b, np.array([0, 0, 0, 1]), n_boot=400, seed=1)
    # resamples: {0,0} -> 1, {1,1} -> 0, {0,1} -> 3/4: percentiles 2.5 and 97.5 are 0 and 1
    assert boot["token_cosine"] == pytest.approx((0.0, 1.0))
    one = bootstrap_shift_intervals(a, b, np.zeros(4, dtype=int), n_boot=50)
    assert all(math.isnan(lo) and math.isnan(hi) for lo, hi in one.values())  # 1 example: no interval
    with pytest.raises(ValueError, match="one entry per token"):
        bootstrap_shift_intervals(a, b, np.zeros(3))
