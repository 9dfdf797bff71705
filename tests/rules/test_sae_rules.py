"""SAE-stage rule scripts on tiny inputs: the fused extract+encode path equals the two-step path; spliced_loss;
the latent-density and latents-shift figures. Each runs the real script with a stand-in ``snakemake`` object."""

import numpy as np
import pandas as pd
import pytest
from demo_chain import CHAIN_ARCH as ARCH
from demo_chain import CHAIN_EXTRACTION as EXTRACTION
from demo_chain import CHAIN_LAYERS as LAYERS
from demo_chain import CHAIN_SAE_LAYERS as SAE_LAYERS
from demo_chain import chain_model_spec as _model_spec


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("sae_rules")


@pytest.fixture(scope="module")
def two_step(work, chain, run):
    out = {}
    for name in ARCH:
        out[name] = work / "results/sae/demo" / name / "cats"
        run(
            "encode_sae",
            input={"acts": chain["acts"][name]},
            output={"codes": out[name]},
            params={"layers": SAE_LAYERS, "sae_dirs": chain["sae_dirs"], "device": "cpu"},
            wildcards={"sae": "demo", "model": name, "dataset": "cats"},
        )
    return out


@pytest.fixture(scope="module")
def fused(work, chain, run):
    out = {}
    for name, arch in ARCH.items():
        out[name] = work / "results/fused/activations" / name / "cats"
        run(
            "extract_activations",
            input={
                "manifest": chain["manifest"]["manifest"],
                "model": str(chain["models"][name]),
                "images": chain["coco"]["images"],
            },
            output={"acts": out[name]},
            params={
                "spec": _model_spec(arch),
                "layers": LAYERS,
                "tokens": False,
                "extraction": EXTRACTION,
                "image_dir": str(chain["coco"]["images"]),
                "fused": {"sae": "demo", "sae_dirs": chain["sae_dirs"]},
            },
            wildcards={"model": name, "dataset": "cats"},
        )
    return out


def test_fused_extraction_codes_equal_the_two_step_path(chain, two_step, fused):
    from repshift.formats import codes_h5
    from repshift.formats.activations_h5 import read_activations

    for name in ARCH:
        # no dense token rows kept; pooled activations identical to the plain extraction's
        for layer in LAYERS:
            f, p = (
                read_activations(fused[name] / f"layer-{layer}.h5"),
                read_activations(chain["acts"][name] / f"layer-{layer}.h5"),
            )
            assert not f.has_tokens()
            np.testing.assert_array_equal(f.pooled("mean"), p.pooled("mean"))
        for layer in SAE_LAYERS:
            a = two_step[name] / f"layer-{layer}.codes.h5"
            b = fused[name] / f"layer-{layer}.codes.h5"
            ca, ma = codes_h5.read_codes(a)
            cb, mb = codes_h5.read_codes(b)
            assert ca.n_tokens == cb.n_tokens > 0
            np.testing.assert_array_equal(ca.offsets, cb.offsets)
            np.testing.assert_array_equal(ca.indices, cb.indices)
            np.testing.assert_allclose(ca.values, cb.values, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(ma["pooled_NF"], mb["pooled_NF"], rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(ma["example_offsets_N1"], mb["example_offsets_N1"])
            ia, ib = codes_h5.read_token_index(a), codes_h5.read_token_index(b)
            for key in ia:
                np.testing.assert_array_equal(ia[key], ib[key])
            ta = pd.read_csv(two_step[name] / f"layer-{layer}.transfer.tsv", sep="\t")
            tb = pd.read_csv(fused[name] / f"layer-{layer}.transfer.tsv", sep="\t")
            assert ta[["position_kind", "metric"]].equals(tb[["position_kind", "metric"]])
            np.testing.assert_allclose(ta["value"], tb["value"], rtol=1e-4, atol=1e-5)
        assert (fused[name] / "transfer.tsv").exists()


def test_compare_sae_reads_fused_codes(work, fused, run):
    o = {
        "shift": work / "results/sae/shift/fused.tsv",
        "latents": work / "results/sae/shift/fused.latents.tsv",
    }
    run(
        "compare_sae",
        input={"base": fused["llm"], "adapted": fused["vlm"]},
        output=o,
        params={
            "comparison": {"base": "llm", "adapted": "vlm", "sae": "demo", "dataset": "cats"},
            "layers": SAE_LAYERS,
        },
        wildcards={"comparison": "fused"},
    )
    t = pd.read_csv(o["shift"], sep="\t")
    before = t[t.layer == 1].set_index("metric")["value"]
    assert before["token_cosine"] == pytest.approx(1.0, abs=1e-4)


def test_spliced_loss(work, chain, run):
    for name, arch in ARCH.items():
        out = work / f"results/sae/spliced/demo/{name}/cats.tsv"
        run(
            "spliced_loss",
            input={"manifest": chain["manifest"]["manifest"], "model": str(chain["models"][name])},
            output={"tsv": out},
            params={
                "spec": _model_spec(arch),
                "sae_dirs": chain["sae_dirs"],
                "spliced": {"max_prompts": 7, "batch_size": 4},
                "extraction": {"dtype": "auto", "device": "cpu", "max_tokens": 64},
                "seed": 0,
            },
            wildcards={"sae": "demo", "model": name, "dataset": "cats"},
        )
        t = pd.read_csv(out, sep="\t")
        assert list(t.columns) == [
            "sae",
            "model",
            "dataset",
            "layer",
            "position_kind",
            "metric",
            "value",
            "lo",
            "hi",
            "n",
        ]
        assert sorted(t["layer"].unique()) == SAE_LAYERS and set(t["position_kind"]) == {"text"}
        v = t.set_index(["layer", "metric"])["value"]
        assert v[(1, "n_prompts")] == 7
        for layer in SAE_LAYERS:
            assert np.isfinite(v[(layer, "ce_clean")]) and np.isfinite(v[(layer, "ce_sae")])
            rec = (v[(layer, "ce_zero")] - v[(layer, "ce_sae")]) / (
                v[(layer, "ce_zero")] - v[(layer, "ce_clean")]
            )
            assert v[(layer, "ce_loss_recovered")] == pytest.approx(rec, rel=1e-2)  # from 6-digit CEs
