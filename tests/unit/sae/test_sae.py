"""repshift.sae: hand-set JumpReLU codes, sparse codes, transfer and shift metrics, demo SAE, loading, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from repshift.demo import sae as demo_sae
from repshift.sae import codes as sae_codes
from repshift.sae import load as sae_load
from repshift.sae import metrics as sae_metrics
from repshift.sae.codes import SparseCodes

D_IN, D_SAE = 64, 256


# ------------------------------------------------------------------------------------------------ helpers


def make_jumprelu(W_enc, b_enc, threshold, W_dec, b_dec, *, hook_name="blocks.3.hook_resid_post", **meta):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    W_enc = torch.as_tensor(W_enc, dtype=torch.float32)
    d_in, d_sae = W_enc.shape
    cfg = JumpReLUSAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        apply_b_dec_to_input=False,
        normalize_activations="none",
        metadata=SAEMetadata(hook_name=hook_name, model_name="test", **meta),
    )
    sae = JumpReLUSAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.b_enc.copy_(torch.as_tensor(b_enc, dtype=torch.float32))
        sae.threshold.copy_(torch.as_tensor(threshold, dtype=torch.float32))
        sae.W_dec.copy_(torch.as_tensor(W_dec, dtype=torch.float32))
        sae.b_dec.copy_(torch.as_tensor(b_dec, dtype=torch.float32))
    return sae.eval()


@pytest.fixture(scope="module")
def hand_sae():
    """d_in 3, d_sae 4, weights chosen so the codes can be worked out by hand."""
    W_enc = [[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, -1]]
    b_enc = [0, 0, -0.5, 0]
    threshold = [0.5, 0.5, 0.5, 1.5]
    W_dec = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0]]
    b_dec = [10.0, -10.0, 1.0]  # must not enter the encoder: apply_b_dec_to_input=False
    return make_jumprelu(W_enc, b_enc, threshold, W_dec, b_dec, neuronpedia_id="test/3-res")


HAND_X = np.array(
    [
        [1.0, 0.25, 0.0],  # pre [1, .25, -.5, 1.25]      -> [1, 0, 0, 0]
        [0.0, 0.0, 0.0],  # pre [0, 0, -.5, 0]            -> all zero
        [0.75, 2.0, 1.0],  # pre [.75, 2, .5, 1.75]       -> [.75, 2, 0 (not > .5), 1.75]
        [-1.0, 1.0, 3.0],  # pre [-1, 1, 2.5, -3]         -> [0, 1, 2.5, 0]
    ],
    dtype=np.float32,
)
HAND_CODES = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [0.75, 2, 0, 1.75], [0, 1, 2.5, 0]], dtype=np.float32)


def identity_sae(d_in: int):
    """ReLU(x) - ReLU(-x) = x: a JumpReLU SAE with threshold 0 that reconstructs any input exactly."""
    eye = np.eye(d_in, dtype=np.float32)
    return make_jumprelu(
        np.concatenate([eye, -eye], 1),
        np.zeros(2 * d_in),
        np.zeros(2 * d_in),
        np.concatenate([eye, -eye], 0),
        np.zeros(d_in),
    )


def random_codes(rng, n, d_sae, p=0.1, zero_rows=()):
    dense = rng.exponential(1.0, size=(n, d_sae)).astype(np.float32) * (rng.random((n, d_sae)) < p)
    dense[list(zero_rows)] = 0
    return dense


def sparse_dictionary_acts(n=2000, d=D_IN, m=D_SAE, k=5, seed=1):
    """Tokens built from k of m random directions, plus noise, an offset and a non-unit scale."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(m, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    codes = np.zeros((n, m))
    for i in range(n):
        codes[i, rng.choice(m, size=k, replace=False)] = rng.exponential(1.0, size=k)
    x = codes @ dirs + 0.05 * rng.normal(size=(n, d))
    return (7.0 * x + 3.0 * rng.normal(size=d)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ ids, urls


def test_sae_id_for_layer():
    assert sae_load.sae_id_for_layer(sae_load.GEMMA_SCOPE_ID_TEMPLATE, 12) == "layer_12/width_16k/canonical"
    with pytest.raises(ValueError, match="placeholder"):
        sae_load.sae_id_for_layer("layer_12/width_16k/canonical", 12)


def test_neuronpedia_url():
    assert sae_metrics.neuronpedia_url("gemma-2-2b/12-gemmascope-res-16k", 7) == (
        "https://www.neuronpedia.org/gemma-2-2b/12-gemmascope-res-16k/7"
    )
    assert sae_metrics.neuronpedia_url(None, 7) == ""
    assert sae_metrics.neuronpedia_url("", 7) == ""


# ------------------------------------------------------------------------------------------------ encoding


def test_encode_matches_hand_set_weights(hand_sae):
    codes = sae_codes.encode(hand_sae, HAND_X)
    np.testing.assert_allclose(codes.to_dense(), HAND_CODES, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(codes.l0_N, [1, 0, 3, 2])
    assert codes.indices.dtype == np.int32 and codes.values.dtype == np.float32
    assert codes.offsets.dtype == np.int64 and codes.offsets.shape == (5,)
    # batching does not change anything; torch input works too
    small = sae_codes.encode(hand_sae, torch.from_numpy(HAND_X), batch_size=1)
    np.testing.assert_array_equal(small.indices, codes.indices)
    np.testing.assert_array_equal(small.values, codes.values)
    np.testing.assert_array_equal(small.offsets, codes.offsets)
    # and agrees with sae-lens' own encode
    with torch.no_grad():
        np.testing.assert_allclose(codes.to_dense(), hand_sae.encode(torch.from_numpy(HAND_X)).numpy())


def test_encode_rejects_wrong_width(hand_sae):
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        sae_codes.encode(hand_sae, np.zeros((2, 4), np.float32))


def test_sparse_codes_dense_round_trip_and_helpers():
    rng = np.random.default_rng(0)
    dense = random_codes(rng, 50, 30, zero_rows=(0, 7, 49))
    codes = SparseCodes.from_dense(dense)
    np.testing.assert_array_equal(codes.to_dense(), dense)
    np.testing.assert_array_equal(codes.l0_N, (dense != 0).sum(1))
    np.testing.assert_array_equal(codes.fire_count_F(), (dense != 0).sum(0))
    np.testing.assert_allclose(codes.mean_F(), dense.mean(0, dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(sae_codes.latent_density(codes), (dense != 0).mean(0))
    np.testing.assert_array_equal(codes.slice_tokens(5, 20).to_dense(), dense[5:20])
    joined = SparseCodes.concatenate([codes.slice_tokens(0, 17), codes.slice_tokens(17, 50)])
    np.testing.assert_array_equal(joined.to_dense(), dense)
    empty = SparseCodes.from_dense(np.zeros((0, 30), np.float32))
    assert empty.n_tokens == 0 and empty.nnz == 0


def test_sparse_codes_validation():
    with pytest.raises(ValueError, match="strictly increasing"):
        SparseCodes(np.array([2, 1]), np.array([1.0, 1.0]), np.array([0, 2]), 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        SparseCodes(np.array([4]), np.array([1.0]), np.array([0, 1]), 4)
    with pytest.raises(ValueError, match="offsets"):
        SparseCodes(np.array([1]), np.array([1.0]), np.array([0, 2]), 4)


# ------------------------------------------------------------------------------------------------ transfer


def test_transfer_metrics_perfect_reconstruction():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8)).astype(np.float32) + 2.0
    m = sae_metrics.transfer_metrics(identity_sae(8), x)
    assert m["fvu"] == pytest.approx(0.0, abs=1e-6)
    assert m["explained_variance"] == pytest.approx(1.0, abs=1e-6)
    assert m["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert m["norm_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert m["l0"] == pytest.approx(np.count_nonzero(x, axis=1).mean())
    assert m["n_tokens"] == 300 and m["n_zero_code"] == 0


def test_transfer_metrics_global_fvu_and_zero_codes(hand_sae):
    x = np.concatenate([HAND_X, np.zeros((1, 3), np.float32)])  # the last token: x = 0 and code = 0
    codes = sae_codes.encode(hand_sae, x)
    m = sae_metrics.transfer_metrics(hand_sae, x, codes, dense_threshold=0.5)
    assert all(math.isfinite(v) for v in m.values()), m

    x_hat = HAND_CODES @ np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0]]) + [10.0, -10.0, 1.0]
    x_hat = np.concatenate([x_hat, [[10.0, -10.0, 1.0]]])
    fvu = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()  # global, as sae_lens.evals
    assert m["fvu"] == pytest.approx(fvu, rel=1e-5)
    assert m["explained_variance"] == pytest.approx(1 - fvu, rel=1e-5)
    assert m["n_zero_code"] == 2  # HAND_X[1] and the added zero token
    assert m["l0"] == pytest.approx(6 / 5)
    # latent 0: 2/5, 1: 2/5, 2: 1/5, 3: 1/5 -> none dead, none above 0.5
    assert m["dead_frac"] == 0.0 and m["dense_frac"] == 0.0
    # x = 0 with x_hat != 0 -> cosine 0 (never NaN); norm ratio uses denominator 1 there, as sae-lens
    nx, nxh = np.linalg.norm(x, axis=1), np.linalg.norm(x_hat, axis=1)
    cos = np.where(nx > 0, (x * x_hat).sum(1) / (np.where(nx > 0, nx, 1) * nxh), 0.0)
    assert m["cosine"] == pytest.approx(cos.mean(), rel=1e-5)
    assert m["norm_ratio"] == pytest.approx((nxh / np.where(nx < 1e-4, 1, nx)).mean(), rel=1e-5)


def test_explained_variance_pinned_by_hand():
    # x: mean (1, 1), sum of squared deviations 4 * 2 = 8; every token reconstructed exactly but the last,
    # (2, 2) -> (2, 1), a squared residual of 1: FVU = 1/8, explained variance 7/8, mse 1/4
    x = np.array([[0, 0], [2, 0], [0, 2], [2, 2]], np.float32)
    codes = SparseCodes.from_dense(
        np.array([[0, 0, 0, 0], [2, 0, 0, 0], [0, 2, 0, 0], [2, 1, 0, 0]], np.float32)
    )
    m = sae_metrics.transfer_metrics(identity_sae(2), x, codes)
    assert m["fvu"] == pytest.approx(0.125) and m["explained_variance"] == pytest.approx(0.875)
    assert m["mse"] == pytest.approx(0.25)
    acc = sae_metrics.TransferAccumulator(4)  # streamed in two batches: the same numbers
    acc.add(identity_sae(2), x[:1], codes.slice_tokens(0, 1))
    acc.add(identity_sae(2), x[1:], codes.slice_tokens(1, 4))
    assert acc.result()["fvu"] == pytest.approx(0.125)


def test_explained_variance_of_a_constant_token_is_one_only_when_exact():
    # the same large vector in every example (a BOS row): its variance is rounding noise, relative to its norm
    x = np.full((5, 2), 1000.0, np.float32)
    exact = SparseCodes.from_dense(np.tile(np.array([[1000, 1000, 0, 0]], np.float32), (5, 1)))
    off = SparseCodes.from_dense(np.tile(np.array([[1000, 999, 0, 0]], np.float32), (5, 1)))
    assert sae_metrics.transfer_metrics(identity_sae(2), x, exact)["explained_variance"] == 1.0
    assert sae_metrics.transfer_metrics(identity_sae(2), x, off)["explained_variance"] == 0.0


# ------------------------------------------------------------------------------------------------ shift


def test_shift_identical_codes():
    rng = np.random.default_rng(2)
    dense = random_codes(rng, 40, 25, zero_rows=(3, 4))
    codes = SparseCodes.from_dense(dense)
    m, table = sae_metrics.shift_metrics(codes, codes)
    assert m["token_cosine"] == pytest.approx(1.0)
    assert m["jaccard"] == 1.0
    assert m["js_divergence"] == 0.0
    assert m["freq_js_divergence"] == 0.0
    assert m["l2"] == 0.0
    assert m["mean_code_cosine"] == pytest.approx(1.0)
    assert m["mean_code_pearson"] == pytest.approx(1.0)
    assert m["n_both_zero"] == (dense.sum(1) == 0).sum() >= 2 and m["n_one_zero"] == 0
    assert len(table) == 0 and list(table.columns) == sae_metrics.SHIFT_COLUMNS
    assert table["latent"].dtype == np.int64


def test_shift_metrics_match_dense_computation():
    rng = np.random.default_rng(3)
    a = random_codes(rng, 200, 40, zero_rows=(0, 1, 2))
    b = random_codes(rng, 200, 40, zero_rows=(1, 2, 5))
    m, _ = sae_metrics.shift_metrics(SparseCodes.from_dense(a), SparseCodes.from_dense(b))
    assert all(math.isfinite(v) for v in m.values()), m

    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both, one = (na == 0) & (nb == 0), (na == 0) ^ (nb == 0)
    cos = np.where(both, 1.0, np.where(one, 0.0, (a * b).sum(1) / np.where(one | both, 1, na * nb)))
    inter, union = ((a != 0) & (b != 0)).sum(1), ((a != 0) | (b != 0)).sum(1)
    ma, mb = a.mean(0, dtype=np.float64), b.mean(0, dtype=np.float64)
    assert m["n_both_zero"] == both.sum() >= 2 and m["n_one_zero"] == one.sum() >= 2
    assert m["token_cosine"] == pytest.approx(cos.mean(), rel=1e-6)
    assert m["jaccard"] == pytest.approx(np.where(union > 0, inter / np.maximum(union, 1), 1.0).mean())
    assert m["l2"] == pytest.approx(np.linalg.norm(a - b, axis=1).mean(), rel=1e-5)
    assert m["mean_code_cosine"] == pytest.approx(ma @ mb / np.linalg.norm(ma) / np.linalg.norm(mb))
    assert m["mean_code_pearson"] == pytest.approx(np.corrcoef(ma, mb)[0, 1])


def test_js_divergence_properties():
    from scipy.spatial.distance import jensenshannon

    rng = np.random.default_rng(4)
    a = SparseCodes.from_dense(random_codes(rng, 100, 30, p=0.2))
    b = SparseCodes.from_dense(random_codes(rng, 100, 30, p=0.05, zero_rows=range(50)))
    m_ab, _ = sae_metrics.shift_metrics(a, b)
    m_ba, _ = sae_metrics.shift_metrics(b, a)
    assert m_ab["js_divergence"] == m_ba["js_divergence"]  # exactly symmetric
    assert 0.0 < m_ab["js_divergence"] <= 1.0
    expected = jensenshannon(a.mean_F(), b.mean_F(), base=2) ** 2
    assert m_ab["js_divergence"] == pytest.approx(expected, rel=1e-9)
    # disjoint supports -> 1 bit; all-zero vs all-zero -> 0; one all-zero -> 1
    left = SparseCodes.from_dense(np.array([[1.0, 0.0]], np.float32))
    right = SparseCodes.from_dense(np.array([[0.0, 2.0]], np.float32))
    zero = SparseCodes.from_dense(np.zeros((1, 2), np.float32))
    assert sae_metrics.shift_metrics(left, right)[0]["js_divergence"] == pytest.approx(1.0)
    assert sae_metrics.shift_metrics(zero, zero)[0]["js_divergence"] == 0.0
    m_zero, _ = sae_metrics.shift_metrics(left, zero)
    assert m_zero["js_divergence"] == 1.0
    assert m_zero["token_cosine"] == 0.0 and m_zero["n_one_zero"] == 1 and m_zero["jaccard"] == 0.0
    assert all(math.isfinite(v) for v in m_zero.values())


def test_shift_table_of_gained_and_lost_latents():
    # 4 tokens, 4 latents: latent 1 gained (fires more under b), latent 2 lost, latent 0 unchanged
    a = np.array([[1, 0, 1, 0], [1, 0, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0]], np.float32)
    b = np.array([[1, 1, 0, 0], [1, 3, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]], np.float32)
    _, table = sae_metrics.shift_metrics(
        SparseCodes.from_dense(a), SparseCodes.from_dense(b), top_k=5, neuronpedia_id="demo/x"
    )
    assert list(table.columns) == sae_metrics.SHIFT_COLUMNS
    rows = {d: g for d, g in table.groupby("direction")}
    assert set(rows) == {"freq_gained", "freq_lost", "mean_gained", "mean_lost"}
    gained = rows["freq_gained"].iloc[0]
    assert gained.latent == 1 and gained.freq_a == 0 and gained.freq_b == 0.75
    assert gained.mean_b == pytest.approx(5 / 4)
    assert gained.neuronpedia_url == "https://www.neuronpedia.org/demo/x/1"
    assert rows["freq_lost"].latent.tolist() == [2] and rows["mean_lost"].latent.tolist() == [2]
    assert 0 not in table.latent.tolist() and 3 not in table.latent.tolist()
    _, no_links = sae_metrics.shift_metrics(SparseCodes.from_dense(a), SparseCodes.from_dense(b))
    assert (no_links.neuronpedia_url == "").all()


def test_float_noise_is_not_a_gained_or_lost_latent():
    """Before the first perturbed block both models give the same activations up to the last bits."""
    rng = np.random.default_rng(5)
    a = random_codes(rng, 50, 20)
    b = a * (1 + rng.uniform(-1e-7, 1e-7, a.shape)).astype(np.float32)
    _, table = sae_metrics.shift_metrics(SparseCodes.from_dense(a), SparseCodes.from_dense(b))
    assert len(table) == 0, table


def test_shift_rejects_different_tokens():
    a = SparseCodes.from_dense(np.ones((3, 4), np.float32))
    b = SparseCodes.from_dense(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="same tokens"):
        sae_metrics.shift_metrics(a, b)


# ------------------------------------------------------------------------------------------------ save / load / compat


def test_save_load_round_trip(hand_sae, tmp_path):
    from sae_lens import SAE, JumpReLUSAE

    hand_sae.save_model(tmp_path / "sae")
    loaded = sae_load.load_sae(tmp_path / "sae")
    assert type(loaded) is JumpReLUSAE and isinstance(SAE.load_from_disk(tmp_path / "sae"), JumpReLUSAE)
    for name, tensor in hand_sae.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    assert sae_load.sae_hook_name(loaded) == "blocks.3.hook_resid_post"
    assert sae_load.sae_neuronpedia_id(loaded) == "test/3-res"
    assert loaded.cfg.apply_b_dec_to_input is False
    np.testing.assert_array_equal(
        sae_codes.encode(loaded, HAND_X).to_dense(), sae_codes.encode(hand_sae, HAND_X).to_dense()
    )
    with pytest.raises(FileNotFoundError, match="no SAE at"):
        sae_load.load_sae(tmp_path / "missing")


def test_check_sae_compat(hand_sae):
    sae_load.check_sae_compat(hand_sae, d_model=3, layer=3, model_name="gemma")
    with pytest.raises(ValueError, match=r"d_in=3.*gemma has d_model=2304"):
        sae_load.check_sae_compat(hand_sae, d_model=2304, layer=3, model_name="gemma")
    with pytest.raises(ValueError, match=r"'blocks\.3\.hook_resid_post'.*'blocks\.12\.hook_resid_post'"):
        sae_load.check_sae_compat(hand_sae, d_model=3, layer=12, model_name="gemma")


def test_fetch_pretrained_sae_offline_gives_helpful_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    out = tmp_path / "saes" / "layer-12"
    sae_id = sae_load.sae_id_for_layer(sae_load.GEMMA_SCOPE_ID_TEMPLATE, 12)
    with pytest.raises(RuntimeError) as info:
        sae_load.fetch_pretrained_sae(sae_load.GEMMA_SCOPE_RELEASE, sae_id, out)
    msg = str(info.value)
    for needle in ("HF_HUB_OFFLINE", "network", "huggingface-cli login", "HF_TOKEN", "make demo", sae_id):
        assert needle in msg, (needle, msg)
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ demo SAE


@pytest.fixture(scope="module")
def demo_acts():
    return sparse_dictionary_acts()


@pytest.fixture(scope="module")
def demo_sae_dir(demo_acts, tmp_path_factory):
    return demo_sae.train_demo_sae(
        demo_acts, tmp_path_factory.mktemp("demo") / "sae", layer=3, d_sae=D_SAE, seed=0
    )


def test_train_demo_sae_gives_sparse_non_degenerate_codes(demo_sae_dir, demo_acts):
    from sae_lens import JumpReLUSAE

    sae = sae_load.load_sae(demo_sae_dir)
    assert type(sae) is JumpReLUSAE
    assert sae.cfg.d_in == D_IN and sae.cfg.d_sae == D_SAE
    assert sae.cfg.apply_b_dec_to_input is False and sae.cfg.normalize_activations == "none"
    sae_load.check_sae_compat(sae, d_model=D_IN, layer=3, model_name="demo-llm")
    m = sae_metrics.transfer_metrics(sae, demo_acts)
    assert 1.0 < m["l0"] < D_SAE / 4, m
    assert m["dead_frac"] < 0.2, m
    assert m["explained_variance"] > 0.5, m
    assert m["n_zero_code"] < 0.05 * len(demo_acts), m
    source = json.loads((demo_sae_dir / sae_load.SOURCE_FILENAME).read_text())
    assert source["source"] == "demo" and source["hook_name"] == "blocks.3.hook_resid_post"
    assert source["train_metrics"]["l0"] == pytest.approx(m["l0"])


def test_train_demo_sae_is_deterministic(demo_sae_dir, demo_acts, tmp_path):
    again = sae_load.load_sae(
        demo_sae.train_demo_sae(demo_acts, tmp_path / "again", layer=3, d_sae=D_SAE, seed=0)
    )
    first = sae_load.load_sae(demo_sae_dir)
    for name, tensor in first.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], tensor, rtol=0, atol=0)
    other = sae_load.load_sae(
        demo_sae.train_demo_sae(demo_acts, tmp_path / "other", layer=3, d_sae=D_SAE, seed=1, steps=20)
    )
    assert not torch.equal(other.W_enc, first.W_enc)


def test_collect_sae_marker_lists_the_layer_folders_and_refuses_a_missing_one(tmp_path):
    from repshift.sae.steps import collect_sae

    dirs = {3: tmp_path / "layer-3", 7: tmp_path / "layer-7"}
    dirs[3].mkdir()
    params = {"sae_dirs": {k: str(v) for k, v in dirs.items()}, "code": "x"}
    marker = tmp_path / "fetched-m.json"
    with pytest.raises(FileNotFoundError, match="layer-7"):
        collect_sae(
            input={}, output={"marker": str(marker)}, params=params, wildcards={"sae": "s", "model": "m"}
        )
    assert not marker.exists()
    dirs[7].mkdir()
    collect_sae(input={}, output={"marker": str(marker)}, params=params, wildcards={"sae": "s", "model": "m"})
    record = json.loads(marker.read_text())
    assert record["layers"] == {"3": str(dirs[3]), "7": str(dirs[7])} and (
        record["sae"],
        record["model"],
    ) == ("s", "m")
    assert "provenance" in record
