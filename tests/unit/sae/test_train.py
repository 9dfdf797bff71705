"""SAE training through sae-lens: planted features are recovered, the scaling constant is symmetric, the token
mix holds its ratio, and a real model's stream trains and saves an SAE that sae-lens loads back."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from repshift.sae.train import TokenMixer, TrainSpec, fit_sae, save_trained_sae, split_kinds


def planted(d_in: int = 16, n_feat: int = 32, n_active: int = 2, seed: int = 0):
    """A known sparse dictionary (unit rows) and an endless stream of sparse combinations of it."""
    g = torch.Generator().manual_seed(seed)
    dict_FD = torch.nn.functional.normalize(torch.randn(n_feat, d_in, generator=g), dim=1)

    def stream(batch: int, scale: float = 1.0) -> Iterator[torch.Tensor]:
        while True:
            idx = torch.stack([torch.randperm(n_feat, generator=g)[:n_active] for _ in range(batch)])
            mag = 1.0 + torch.rand(batch, n_active, generator=g)
            yield scale * torch.einsum("bk,bkd->bd", mag, dict_FD[idx])

    return dict_FD, stream


def test_topk_sae_recovers_planted_directions():
    dict_FD, stream = planted()
    spec = TrainSpec(
        architecture="topk", expansion=4, k=2, tokens=128 * 600, batch_size=128, lr=5e-3,
        lr_decay=0.2, norm_batches=5, log_every=100,
    )  # fmt: skip
    sae, scale, curve = fit_sae(stream(128), spec, d_in=16, layer=3, model_name="synthetic")
    W_dec = torch.nn.functional.normalize(sae.W_dec.detach(), dim=1)
    best_F = (dict_FD @ W_dec.T).max(1).values
    assert (best_F > 0.9).float().mean() >= 0.8, best_F
    # curve: what was logged, in order, LR decayed to ~0 at the end
    assert list(curve.columns)[:3] == ["step", "tokens", "loss"]
    assert curve["lr"].iloc[0] == pytest.approx(5e-3)
    assert curve["lr"].iloc[-1] < 5e-4
    assert curve["fvu"].iloc[-1] < curve["fvu"].iloc[0]


def test_scaling_constant_is_symmetric_and_stored(tmp_path):
    """Trained on activations 50x larger, the SAE still reconstructs them in their own units (a constant
    applied on the way in but not undone on the way out would leave x_hat 50x off)."""
    _, stream = planted(seed=1)
    spec = TrainSpec(
        architecture="standard", expansion=4, l1_coefficient=0.05, tokens=128 * 300, batch_size=128, lr=3e-3,
        norm_batches=5, log_every=50,
    )  # fmt: skip
    sae, scale, _ = fit_sae(stream(128, scale=50.0), spec, d_in=16, layer=0, model_name="synthetic")
    # E|x| for 2 active unit directions with magnitudes U(1,2): about 50*sqrt(2*2.33) ~ 108; s = 4/E|x|
    assert 4 / 140 < scale < 4 / 80
    x = next(stream(512, scale=50.0))
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(x))
    ratio = float(x_hat.norm(dim=1).mean() / x.norm(dim=1).mean())
    assert 0.8 < ratio < 1.2
    fvu = float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert fvu < 0.3
    out = save_trained_sae(sae, tmp_path / "layer-0", info={"input_scale": scale, "layer": 0})
    from sae_lens import SAE

    back = SAE.load_from_disk(out)
    torch.testing.assert_close(back.decode(back.encode(x)), x_hat)
    assert back.cfg.normalize_activations == "none"
    import json

    assert json.loads((out / "repshift_source.json").read_text())["input_scale"] == pytest.approx(scale)


def test_token_mixer_holds_the_ratio_and_caps_surplus():
    mixer = TokenMixer({"image": 0.5, "caption": 0.25, "prompt": 0.25}, chunk=8, cap=40)
    assert mixer.counts == {"image": 4, "caption": 2, "prompt": 2}
    mixer.add("image", torch.full((256, 3), 1.0))  # over-supplied: capped at 40
    assert mixer.sizes["image"] == 40
    mixer.add("caption", torch.full((5, 3), 2.0))
    mixer.add("prompt", torch.full((4, 3), 3.0))
    chunks = list(mixer.ready())
    assert len(chunks) == 2  # prompt runs out after 2 chunks of 2
    for c in chunks:
        np.testing.assert_array_equal(c[:, 0].numpy(), [1, 1, 1, 1, 2, 2, 3, 3])
    assert mixer.sizes == {"image": 32, "caption": 1, "prompt": 0}


def test_split_kinds_separates_prompt_from_caption():
    from repshift.formats.activations_h5 import POSITION_KINDS as K

    kinds = np.array(
        [[K["image"], K["bos"], K["text"], K["pad"]], [K["pad"], K["bos"], K["text"], K["text"]]]
    )
    m = split_kinds(kinds, np.array([True, False]))
    assert m["image"].sum() == 1 and m["image"][0, 0]
    assert m["prompt"].sum() == 1 and m["prompt"][0, 2]
    assert m["caption"].sum() == 2 and m["caption"][1, 2:].all()


def test_spec_rejects_unknown_architecture_and_empty_mix():
    with pytest.raises(ValueError, match="architecture"):
        TrainSpec(architecture="gated")
    with pytest.raises(ValueError, match="token_mix"):
        TrainSpec(token_mix={"image": 0})
    with pytest.raises(ValueError, match="unknown key"):
        TrainSpec.from_dict({"widht": 8})
