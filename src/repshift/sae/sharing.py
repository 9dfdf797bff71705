"""Modality sharing of an SAE's latents over paired image / caption inputs.

Per latent: its mean activation per image token and per text token (token-count normalised, so 256 image tokens
do not outweigh a dozen caption tokens), and ``image_share`` = image / (image + text). With thresholds
(``lo``, ``hi``): image-only when share >= hi, text-only when share <= lo, shared in between; latents that never
fire on these inputs are ``dead`` and counted apart. Co-activation: over pairs (an image and its caption), for
each shared latent, P(active on both | active on either) (a Jaccard index over pairs; active = fires on any
content token of the input).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

CLASSES = ("image-only", "text-only", "shared", "dead")


def image_share(mass_image_F: np.ndarray, n_image: int, mass_text_F: np.ndarray, n_text: int) -> np.ndarray:
    """image / (image + text) of the per-token mean activations; NaN for a latent silent on both."""
    mi = np.asarray(mass_image_F, dtype=np.float64) / max(int(n_image), 1)
    mt = np.asarray(mass_text_F, dtype=np.float64) / max(int(n_text), 1)
    tot = mi + mt
    return np.where(tot > 0, mi / np.where(tot > 0, tot, 1.0), np.nan)


def classify(share_F: np.ndarray, *, lo: float = 0.1, hi: float = 0.9) -> np.ndarray:
    if not 0 <= lo < hi <= 1:
        raise ValueError(f"sharing thresholds need 0 <= lo < hi <= 1, got lo={lo}, hi={hi}")
    share = np.asarray(share_F, dtype=np.float64)
    out = np.full(share.shape, "shared", dtype=object)
    out[share >= hi] = "image-only"
    out[share <= lo] = "text-only"
    out[np.isnan(share)] = "dead"
    return out


def coactivation(active_img_PF: np.ndarray, active_txt_PF: np.ndarray) -> np.ndarray:
    """Per latent, over pairs: (# pairs active on both) / (# pairs active on either); NaN when never active."""
    a = np.asarray(active_img_PF, dtype=bool)
    b = np.asarray(active_txt_PF, dtype=bool)
    both = (a & b).sum(0)
    either = (a | b).sum(0)
    return np.where(either > 0, both / np.where(either > 0, either, 1), np.nan)


def sharing_summary(
    mass_image_F: np.ndarray,
    n_image: int,
    mass_text_F: np.ndarray,
    n_text: int,
    active_img_PF: np.ndarray,
    active_txt_PF: np.ndarray,
    *,
    thresholds: Mapping[str, float],
) -> tuple[dict[str, float], pd.DataFrame]:
    """Fractions per class (of live latents; ``dead`` of all), mean co-activation of shared latents, and
    per-latent rows (``latent``, ``image_share``, ``class``, ``coactivation``)."""
    share = image_share(mass_image_F, n_image, mass_text_F, n_text)
    cls = classify(share, lo=float(thresholds.get("lo", 0.1)), hi=float(thresholds.get("hi", 0.9)))
    co = coactivation(active_img_PF, active_txt_PF)
    live = cls != "dead"
    n_live = max(int(live.sum()), 1)
    metrics = {f"frac_{c}": float((cls == c).sum() / n_live) for c in CLASSES[:3]}
    metrics["frac_dead"] = float((~live).mean())
    shared = cls == "shared"
    metrics["coactivation_shared"] = (
        float(np.nanmean(co[shared])) if np.isfinite(co[shared]).any() else np.nan
    )
    metrics["coactivation_all"] = float(np.nanmean(co)) if np.isfinite(co).any() else np.nan
    latents = pd.DataFrame(
        {"latent": np.arange(len(share)), "image_share": share, "class": cls, "coactivation": co}
    )
    return metrics, latents
