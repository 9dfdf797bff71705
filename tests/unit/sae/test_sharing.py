"""Modality sharing: token-count normalised image share, classes, co-activation over pairs (by hand)."""

import numpy as np
import pytest

from repshift.sae.sharing import classify, coactivation, image_share, sharing_summary


def test_latent_active_only_on_image_tokens_is_image_only():
    # latent 0: image only; 1: text only; 2: equal per-token mean (mass 256 on 256 image tokens, 10 on 10 text)
    # latent 3: never fires
    mass_img = np.array([5.0, 0.0, 256.0, 0.0])
    mass_txt = np.array([0.0, 3.0, 10.0, 0.0])
    share = image_share(mass_img, 256, mass_txt, 10)
    np.testing.assert_allclose(share[:3], [1.0, 0.0, 0.5])
    assert np.isnan(share[3])
    np.testing.assert_array_equal(classify(share), ["image-only", "text-only", "shared", "dead"])


def test_coactivation_is_jaccard_over_pairs():
    img = np.array([[1, 1], [1, 0], [0, 0]], dtype=bool)
    txt = np.array([[1, 0], [0, 0], [1, 0]], dtype=bool)
    co = coactivation(img, txt)
    assert co[0] == pytest.approx(1 / 3)  # both on pair 0; either on pairs 0, 1, 2
    assert co[1] == 0.0


def test_summary_fractions_of_live_latents():
    metrics, latents = sharing_summary(
        np.array([1.0, 0.0, 1.0, 0.0]), 1, np.array([0.0, 1.0, 1.0, 0.0]), 1,
        np.ones((2, 4), bool), np.ones((2, 4), bool), thresholds={"lo": 0.2, "hi": 0.8},
    )  # fmt: skip
    assert metrics["frac_image-only"] == pytest.approx(1 / 3)
    assert metrics["frac_shared"] == pytest.approx(1 / 3)
    assert metrics["frac_dead"] == pytest.approx(1 / 4)
    assert metrics["coactivation_shared"] == 1.0
    assert list(latents["class"]) == ["image-only", "text-only", "shared", "dead"]


def test_bad_thresholds_raise():
    with pytest.raises(ValueError, match="thresholds"):
        classify(np.array([0.5]), lo=0.9, hi=0.1)
