"""Invariants of the steering hook on the demo models; each fails if the write point moves by one block."""

import numpy as np
import pytest
import torch
from PIL import Image

from repshift.formats.activations_h5 import POSITION_KINDS
from repshift.models.extract import capture_layers, run_capture
from repshift.steering import intervene
from repshift.steering.directions import probe_readout
from repshift.steering.measures import model_forward, probe_scores
from repshift.steering.rollouts import greedy_rollout

LAYER = 2


def _batch(adapter):
    if adapter.spec.is_vlm:
        images = [Image.new("RGB", (32, 32), c) for c in ((200, 30, 30), (20, 90, 200))]
        return adapter.image_batch(images, adapter.spec.image_prompt), "image"
    ids = [adapter.text_ids(t, 32)[0] for t in ("a cat on a mat", "the dog runs in the park today")]
    return adapter.text_batch(ids), "text"


def _delta(adapter, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(adapter.d_model, generator=g)


def _capture_all(adapter, batch, edit_layer=None, delta=None, mask=None):
    layers = list(range(adapter.num_layers))
    import contextlib

    with contextlib.ExitStack() as stack:
        if edit_layer is not None:
            stack.enter_context(intervene.steer(adapter.layers, edit_layer, delta, mask))
        return run_capture(adapter, batch, layers)


@pytest.mark.parametrize("arch", ["llm", "paligemma", "llava"])
def test_alpha_zero_is_bit_identical(adapters, arch):
    adapter = adapters[arch]
    batch, positions = _batch(adapter)
    mask = intervene.position_mask(batch.kinds_BT, positions)
    clean = model_forward(adapter, batch)
    with intervene.steer(adapter.layers, LAYER, torch.zeros(adapter.d_model), mask) as state:
        edited = model_forward(adapter, batch)
    assert state["edited"] == 1
    assert torch.equal(clean, edited)


@pytest.mark.parametrize("arch", ["llm", "paligemma", "llava"])
def test_edit_lands_at_block_output_on_masked_positions_only(adapters, arch):
    adapter = adapters[arch]
    batch, positions = _batch(adapter)
    mask = intervene.position_mask(batch.kinds_BT, positions)
    assert mask.any() and (~mask & (batch.kinds_BT != POSITION_KINDS["pad"])).any()
    delta = _delta(adapter)
    clean = _capture_all(adapter, batch)
    edited = _capture_all(adapter, batch, LAYER, delta, mask)
    for k in range(LAYER):  # blocks before L untouched
        assert torch.equal(clean[k], edited[k]), k
    m = torch.from_numpy(mask)
    # at block L's output: outside the mask bit-identical, inside exactly + delta
    assert torch.equal(clean[LAYER][~m], edited[LAYER][~m])
    torch.testing.assert_close(edited[LAYER][m] - clean[LAYER][m], delta.expand(int(m.sum()), -1))
    assert not torch.equal(clean[LAYER + 1], edited[LAYER + 1])  # and it propagates


def test_hook_is_removed_even_on_error(adapters):
    adapter = adapters["llm"]
    before = len(adapter.layers[LAYER]._forward_hooks)
    with (
        pytest.raises(RuntimeError),
        intervene.steer(adapter.layers, LAYER, _delta(adapter), np.ones((1, 3), bool)),
    ):
        raise RuntimeError("boom")
    assert len(adapter.layers[LAYER]._forward_hooks) == before


def test_probe_logit_moves_by_alpha_w_dot_v(adapters):
    """Read and write share one tensor: a layer-L probe moves by exactly alpha * (w . v) when every pooled
    image token gets alpha * v (w = coef / scale, the readout mapped back through the scaler)."""
    adapter = adapters["paligemma"]
    batch, _ = _batch(adapter)
    mask = intervene.position_mask(batch.kinds_BT, "image")
    rng = np.random.default_rng(1)
    d = adapter.d_model
    coef, scale = rng.standard_normal((3, d)), rng.uniform(0.5, 2.0, d)
    w = probe_readout(coef, scale, np.array([0, 1, 2]), source=0, target=2)
    np.testing.assert_allclose(w, (coef[2] - coef[0]) / scale)
    v = rng.standard_normal(d)
    v /= np.linalg.norm(v)
    alpha = 2.5
    with capture_layers(adapter.layers, [LAYER], stop=False) as clean:
        model_forward(adapter, batch)
    with intervene.steer(adapter.layers, LAYER, torch.tensor(alpha * v, dtype=torch.float32), mask):
        with capture_layers(adapter.layers, [LAYER], stop=False) as edited:
            model_forward(adapter, batch)
    before = probe_scores(clean[LAYER].float(), batch.kinds_BT, "image", lambda X: X @ w)
    after = probe_scores(edited[LAYER].float(), batch.kinds_BT, "image", lambda X: X @ w)
    np.testing.assert_allclose(after - before, alpha * float(w @ v), rtol=1e-3, atol=1e-3)


def test_prompt_mask_leaves_the_continuation_out():
    kinds = np.array([[0, 1, 2, 2, 2], [1, 2, 2, 2, 2]])
    mask = intervene.position_mask(kinds, "prompt", continuation_B=np.array([2, 1]))
    assert mask.tolist() == [[False, True, True, False, False], [True, True, True, True, False]]


@pytest.mark.parametrize("arch", ["llm", "paligemma", "llava"])
def test_cached_rollout_equals_uncached(adapters, arch):
    adapter = adapters[arch]
    batch, positions = _batch(adapter)
    mask = intervene.position_mask(batch.kinds_BT, positions)
    delta = _delta(adapter, seed=3, scale=20.0)
    kw = dict(layer=LAYER, delta_D=delta, mask_BT=mask, max_new_tokens=6)
    cached = greedy_rollout(adapter, batch, use_cache=True, **kw)
    uncached = greedy_rollout(adapter, batch, use_cache=False, **kw)
    plain = greedy_rollout(adapter, batch, layer=None, delta_D=None, mask_BT=mask, max_new_tokens=6)
    assert cached == uncached
    assert cached != plain  # the edit does change the rollout (the test could fail)
