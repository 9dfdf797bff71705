"""Spliced CE loss on the demo models with hand-set sae-lens SAEs: identity -> 1, zeros -> 0, right block."""

import math

import numpy as np
import pytest
import torch

from repshift.formats.activations_h5 import POSITION_KINDS
from repshift.models.extract import run_capture
from repshift.sae import spliced as sae_spliced

TEXTS = ["a cat on a mat", "two dogs run in the park", "a person rides a red car down the street", "cat"]


def _jumprelu(d_in, d_sae, w_enc, w_dec, b_dec=None):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    sae = JumpReLUSAE(
        JumpReLUSAEConfig(
            d_in=d_in,
            d_sae=d_sae,
            dtype="float32",
            device="cpu",
            apply_b_dec_to_input=False,
            normalize_activations="none",
        )
    )
    with torch.no_grad():
        sae.W_enc.copy_(w_enc)
        sae.b_enc.zero_()
        sae.threshold.zero_()
        sae.W_dec.copy_(w_dec)
        sae.b_dec.copy_(torch.zeros(d_in) if b_dec is None else b_dec)
    return sae.eval()


def identity_sae(d):
    """decode(encode(x)) == x exactly: latents relu(x) and relu(-x), decoded as relu(x) - relu(-x)."""
    eye = torch.eye(d)
    return _jumprelu(d, 2 * d, torch.cat([eye, -eye], 1), torch.cat([eye, -eye], 0))


def zero_sae(d):
    """Encodes like the identity SAE but decodes everything to zero."""
    eye = torch.eye(d)
    return _jumprelu(d, 2 * d, torch.cat([eye, -eye], 1), torch.zeros(2 * d, d))


class Spy:
    """A real SAE that records what it is given."""

    def __init__(self, sae):
        self.sae, self.device, self.dtype, self.seen = sae, sae.device, sae.dtype, []

    def encode(self, x):
        self.seen.append(x.clone())
        return self.sae.encode(x)

    def decode(self, z):
        return self.sae.decode(z)


def _ids(adapter):
    return [adapter.text_ids(t, 64)[0] for t in TEXTS]


def test_identity_sae_recovers_everything_and_zero_sae_nothing(adapters):
    for name in ("llm", "paligemma"):
        adapter = adapters[name]
        d = adapter.d_model
        last = adapter.num_layers - 1
        ident = sae_spliced.spliced_ce(
            adapter, {1: identity_sae(d), last: identity_sae(d)}, _ids(adapter), batch_size=3
        )
        zero = sae_spliced.spliced_ce(
            adapter, {1: zero_sae(d), last: zero_sae(d)}, _ids(adapter), batch_size=3
        )
        for layer in (1, last):
            r = ident[layer]
            assert r.ce_sae == pytest.approx(r.ce_clean, abs=1e-6)
            assert r.recovered == pytest.approx(1.0, abs=1e-5)
            assert zero[layer].ce_sae == pytest.approx(zero[layer].ce_zero, abs=1e-6)
            assert zero[layer].recovered == pytest.approx(0.0, abs=1e-5)
            assert r.ce_zero != r.ce_clean  # the metric is defined (random demo weights: either sign)
        # targets: every real token except BOS
        assert ident[1].n_targets == sum(len(x) - 1 for x in _ids(adapter))


def test_splice_reads_the_output_of_block_l_at_text_positions(adapters):
    adapter = adapters["llm"]
    ids = _ids(adapter)
    for layer in (0, 2, adapter.num_layers - 1):
        spy = Spy(identity_sae(adapter.d_model))
        sae_spliced.spliced_ce(adapter, {layer: spy}, ids, batch_size=len(ids))
        order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
        batch = adapter.text_batch([ids[i] for i in order])
        hidden = run_capture(adapter, batch, [layer])[layer]
        text = torch.from_numpy(batch.kinds_BT == POSITION_KINDS["text"])
        torch.testing.assert_close(spy.seen[0], hidden[text].float())
        if (
            layer < adapter.num_layers - 1
        ):  # hidden_states[L+1] = output of block L (the last one is post-norm)
            with torch.inference_mode():
                hs = adapter.model(**batch.inputs, output_hidden_states=True, use_cache=False).hidden_states
            torch.testing.assert_close(spy.seen[0], hs[layer + 1][text].float())


def test_bos_and_pads_untouched_and_hooks_removed(adapters):
    adapter = adapters["llm"]
    hooks_before = [len(b._forward_hooks) for b in adapter.layers]
    seen = {}

    def record(hidden):
        seen["h"] = hidden.clone()
        return hidden

    batch = adapter.text_batch(_ids(adapter))
    text = torch.from_numpy(batch.kinds_BT == POSITION_KINDS["text"])
    with torch.inference_mode(), sae_spliced.replace_block_output(adapter.layers[1], record):
        adapter.model(**batch.inputs, use_cache=False)
    out = sae_spliced.zero_splice(text)(seen["h"])
    assert (out[text] == 0).all()
    torch.testing.assert_close(out[~text], seen["h"][~text])  # BOS and pads keep their activations
    sae_spliced.spliced_ce(adapter, {1: identity_sae(adapter.d_model)}, _ids(adapter))
    assert [len(b._forward_hooks) for b in adapter.layers] == hooks_before


def test_next_token_ce_masks_pads_and_never_targets_bos():
    vocab = 7
    ids = torch.tensor([[0, 0, 2, 5, 6], [2, 3, 4, 5, 6]])  # left-padded; 2 = BOS
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    logits = torch.zeros(2, 5, vocab)  # uniform: every target costs log(vocab)
    total, n = sae_spliced.next_token_ce(logits, ids, mask)
    assert n == 2 + 4
    assert total == pytest.approx(n * math.log(vocab), rel=1e-6)
    # a confident correct prediction costs ~0 only where the target is real
    logits[1, 0, 3] = 50.0
    total2, _ = sae_spliced.next_token_ce(logits, ids, mask)
    assert total2 == pytest.approx((n - 1) * math.log(vocab), rel=1e-4)


def test_recovered_is_nan_when_ablation_costs_nothing_and_table_columns():
    r = sae_spliced.SplicedCE(sum_clean=2.0, sum_sae=2.0, sum_zero=2.0, n_targets=2, n_prompts=1)
    assert math.isnan(r.recovered)
    table = sae_spliced.spliced_table(
        {3: sae_spliced.SplicedCE(1.0, 2.0, 5.0, 1, 1)}, sae="s", model="m", dataset="d"
    )
    columns = ["sae", "model", "dataset", "layer", "position_kind", "metric", "value", "lo", "hi", "n"]
    assert list(table.columns) == columns
    assert table["lo"].isna().all() and (table["n"] == 1).all()  # no per-prompt sums: no interval
    row = table.set_index("metric")["value"]
    assert row["ce_loss_recovered"] == pytest.approx(0.75) and row["ce_delta"] == pytest.approx(1.0)
    assert set(table["metric"]) == set(sae_spliced.SPLICED_METRICS)


def test_next_token_ce_rows_sum_to_the_batch_total():
    ids = torch.tensor([[0, 0, 2, 5, 6], [2, 3, 4, 5, 6]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    logits = torch.zeros(2, 5, 7)
    sums, counts = sae_spliced.next_token_ce_rows(logits, ids, mask)
    np.testing.assert_array_equal(counts, [2, 4])
    np.testing.assert_allclose(sums, [2 * math.log(7), 4 * math.log(7)], rtol=1e-6)


def test_bootstrap_spliced_over_prompts_by_hand():
    # two prompts, one target each: prompt 0 clean 1, SAE 1, zero 3 (recovers 1); prompt 1 clean 1, SAE 3, zero 3
    # (recovers 0). Resamples {0,0}: ce_sae 1, recovered 1; {1,1}: ce_sae 3, recovered 0 (p = 1/4 each);
    # {0,1}: ce_sae 2, recovered 0.5 -> the 2.5% / 97.5% percentiles are the extremes.
    per = np.array([[1.0, 1.0, 3.0, 1], [1.0, 3.0, 3.0, 1]])
    r = sae_spliced.SplicedCE(2.0, 4.0, 6.0, 2, 2, per)
    boot = sae_spliced.bootstrap_spliced(r, n_boot=400, seed=0)
    assert boot["ce_sae"] == pytest.approx((1.0, 3.0))
    assert boot["ce_loss_recovered"] == pytest.approx((0.0, 1.0))
    assert boot["ce_delta"] == pytest.approx((0.0, 2.0))
    table = sae_spliced.spliced_table({4: r}, sae="s", model="m", dataset="d", n_boot=400)
    row = table.set_index("metric").loc["ce_sae"]
    assert (row["lo"], row["hi"], row["n"]) == (1.0, 3.0, 2)


def test_sample_prompts_is_seeded_and_ordered():
    texts = [f"t{i}" for i in range(20)]
    a = sae_spliced.sample_prompts(texts, 5, seed=0)
    assert a == sae_spliced.sample_prompts(texts, 5, seed=0) and len(a) == 5
    assert a == sorted(a, key=texts.index)
    assert sae_spliced.sample_prompts(texts, None, seed=0) == texts
    assert np.array_equal(sae_spliced.sample_prompts(texts[:3], 5, seed=1), texts[:3])


def test_spliced_jobs_follow_the_config():
    from pathlib import Path

    import yaml

    from repshift import config as rcfg

    cfg = yaml.safe_load((Path(__file__).resolve().parents[3] / "config" / "demo.yaml").read_text())
    cfg["spliced"]["datasets"] = "comparisons"
    jobs = rcfg.spliced_jobs(cfg)
    assert jobs == sorted(("demo-sae", m, d) for m, d in rcfg.sae_models(cfg, "demo-sae"))
    cfg["spliced"]["datasets"] = ["prompts-multilingual"]
    models = {m for m, _ in rcfg.sae_models(cfg, "demo-sae")}
    assert rcfg.spliced_jobs(cfg) == sorted(("demo-sae", m, "prompts-multilingual") for m in models)
    cfg["spliced"]["datasets"] = []
    assert rcfg.spliced_jobs(cfg) == []
    cfg["spliced"]["datasets"] = ["demo-brightness"]
    with pytest.raises(rcfg.ConfigError, match="no text rows"):
        rcfg.check_config(cfg)
