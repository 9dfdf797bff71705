"""One test per rule script, chained on tiny inputs: synthetic COCO → manifest → demo models → activations →
demo SAE → codes → shift → probes → figure. Each runs the real script with a stand-in ``snakemake`` object."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from demo_chain import CHAIN_EXTRACTION as EXTRACTION
from demo_chain import CHAIN_K as K
from demo_chain import CHAIN_LAYERS as LAYERS
from demo_chain import chain_model_spec as _model_spec

from repshift.formats.activations_h5 import read_activations


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("rules")


# the stages of the shared demo chain (tests/rules/conftest.py), built once per session
@pytest.fixture(scope="module")
def coco(chain):
    return chain["coco"]


@pytest.fixture(scope="module")
def manifest(chain):
    return chain["manifest"]


@pytest.fixture(scope="module")
def models(chain):
    return chain["models"]


@pytest.fixture(scope="module")
def acts(chain):
    return chain["acts"]


def test_make_synthetic_coco(coco):
    from pycocotools.coco import COCO

    c = COCO(str(coco["instances"]))
    assert len(c.getImgIds()) == 64 and len(list(coco["images"].glob("*.jpg"))) == 64


def test_build_dataset(manifest):
    df = pd.read_csv(manifest["manifest"], sep="\t")
    assert set(df["modality"]) == {"text", "image"}
    assert df.groupby("label")["group"].nunique().tolist() == [6, 6, 6, 6]
    assert Path(manifest["meta"]).exists()


def test_make_demo_model(models):
    for path in models.values():
        assert (path / "config.json").exists() and (path / "repshift_demo.json").exists()


def test_extract_activations(acts, manifest):
    df = pd.read_csv(manifest["manifest"], sep="\t", keep_default_na=False)
    vlm = read_activations(acts["vlm"] / "layer-3.h5")
    llm = read_activations(acts["llm"] / "layer-3.h5")
    assert list(vlm.example_id) == list(df["example_id"].astype(str))
    assert list(llm.example_id) == list(df[df["modality"] == "text"]["example_id"].astype(str))
    assert sorted(p.name for p in acts["vlm"].glob("layer-*.h5")) == [f"layer-{i}.h5" for i in LAYERS]
    # the demo VLM decoder is the LLM up to block K-1: identical text activations there, different after
    text = np.flatnonzero(vlm.modality == "text")
    for layer in LAYERS:
        a = read_activations(acts["llm"] / f"layer-{layer}.h5").pooled("mean")
        b = read_activations(acts["vlm"] / f"layer-{layer}.h5").pooled("mean", text)
        if layer < K:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
        else:
            assert np.abs(a - b).max() > 1e-2


@pytest.fixture(scope="module")
def saes(chain):
    return {layer: chain["sae_root"] / f"layer-{layer}" for layer in (1, 3)}


def test_train_demo_sae(saes):
    from sae_lens import SAE

    sae = SAE.load_from_disk(str(saes[3]))
    assert sae.cfg.d_sae == 64 and type(sae).__name__ == "JumpReLUSAE"
    assert sae.cfg.metadata.hook_name == "blocks.3.hook_resid_post"


@pytest.fixture(scope="module")
def codes(work, acts, saes, run):
    out = {}
    for name in ("llm", "vlm"):
        target = work / "results/sae/demo" / name / "cats"
        run(
            "encode_sae",
            input={"acts": acts[name], "saes": str(saes[1].parent)},
            output={"codes": target},
            params={"layers": [1, 3], "sae_dirs": {k: str(v) for k, v in saes.items()}, "device": "cpu"},
            wildcards={"sae": "demo", "model": name, "dataset": "cats"},
        )
        out[name] = target
    return out


def test_encode_sae(codes):
    from repshift.formats import codes_h5

    t = pd.read_csv(codes["vlm"] / "layer-3.transfer.tsv", sep="\t")
    assert {"text", "image", "prompt", "bos"} <= set(t["position_kind"])
    assert {"fvu", "l0", "cosine"} <= set(t["metric"])
    assert np.isfinite(t["value"]).all()
    c, meta = codes_h5.read_codes(codes["llm"] / "layer-1.codes.h5")
    assert meta["attrs"]["layer"] == 1
    assert "encode_sae: 100%" in (codes["llm"].parent / "encode_sae.log").read_text()  # progress in the log
    # pooled code of example 0 = mean of its text-token codes
    idx = codes_h5.read_token_index(codes["llm"] / "layer-1.codes.h5")
    a, b = idx["offsets"][0], idx["offsets"][1]
    text = np.flatnonzero(idx["kinds_T"][a:b] == 2) + a
    np.testing.assert_allclose(meta["pooled_NF"][0], c.take(text).to_dense().mean(0), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def shift(work, codes, run):
    o = {"shift": work / "results/sae/shift/cmp.tsv", "latents": work / "results/sae/shift/cmp.latents.tsv"}
    run(
        "compare_sae",
        input={"base": codes["llm"], "adapted": codes["vlm"]},
        output=o,
        params={
            "comparison": {"base": "llm", "adapted": "vlm", "sae": "demo", "dataset": "cats"},
            "layers": [1, 3],
        },
        wildcards={"comparison": "cmp"},
    )
    return o


def test_compare_sae_zero_shift_before_k(shift):
    t = pd.read_csv(shift["shift"], sep="\t")
    before = t[t.layer == 1].set_index("metric")["value"]
    after = t[t.layer == 3].set_index("metric")["value"]
    assert before["token_cosine"] == pytest.approx(1.0, abs=1e-4)
    assert before["jaccard"] == pytest.approx(1.0, abs=1e-4)
    assert after["token_cosine"] < 0.99
    assert Path(shift["latents"]).exists()


@pytest.fixture(scope="module")
def probe_tables(work, acts, run):
    out = []
    task = {
        "dataset": "cats",
        "pooling": "mean",
        "models": ["llm", "vlm"],
        "cross_model": [["llm", "vlm"]],
        "cross_modal": ["vlm"],
    }
    for layer in (1, 3):
        o = {
            "results": work / f"results/probes/cats/layer-{layer}.tsv",
            "weights": work / f"results/probes/cats/weights/layer-{layer}",
        }
        run(
            "train_probe",
            input={"llm": acts["llm"], "vlm": acts["vlm"]},
            output=o,
            params={
                "task": task,
                "settings": {"c_grid": [0.1, 1.0], "seeds": [0], "inner_folds": 2},
                "seed": 0,
            },
            wildcards={"task": "cats", "layer": str(layer)},
            threads=1,
        )
        out.append(o)
    return out


def test_train_probe(probe_tables):
    t = pd.read_csv(probe_tables[1]["results"], sep="\t")
    assert set(t["transfer"]) == {"within", "cross-model", "cross-modal"}
    assert {"logreg", "control", "majority"} <= set(t["probe"])
    within = t[(t.transfer == "within") & (t.probe == "logreg") & (t.metric == "accuracy")]
    assert within["value"].mean() > 0.25  # 4 balanced classes
    assert any(p.suffix == ".safetensors" for p in Path(probe_tables[1]["weights"]).iterdir())
    log = (Path(probe_tables[1]["results"]).parent / "train_probe.log").read_text()
    assert "probe logreg: 100%" in log  # the progress bar goes to the rule's log


def test_plot_layer_sweep(work, shift, codes, probe_tables, run):
    out = {
        "pdf": work / "figs/layer_sweep.pdf",
        "png": work / "figs/layer_sweep.png",
        "tsv": work / "figs/layer_sweep.tsv",
    }
    run(
        "plot_layer_sweep",
        input={
            "shift": [str(shift["shift"])],
            "codes": [str(c) for c in codes.values()],
            "probes": [str(p["results"]) for p in probe_tables],
        },
        output=out,
        # the chain's comparison has a handful of captions (the default needs 50 for a series to be drawn)
        params={"min_examples": 1},
    )
    table = pd.read_csv(out["tsv"], sep="\t")
    assert {"panel", "series", "layer", "value"} <= set(table.columns)
    assert out["pdf"].stat().st_size > 5000 and out["png"].stat().st_size > 5000
    # the figure's numbers are the sources' numbers
    src = pd.read_csv(shift["shift"], sep="\t").query("layer == 1").set_index("metric")["value"]
    row = table[(table.layer == 1) & table.panel.str.contains("per-token")]
    assert row["value"].iloc[0] == pytest.approx(src["token_cosine"], rel=1e-5)


def test_merge_activations_equals_unsharded(work, manifest, models, coco, acts, run):
    shards = []
    for i in range(2):
        target = work / "results/activations/shards/vlm/cats" / f"shard-{i}"
        run(
            "extract_activations",
            input={"manifest": manifest["manifest"], "model": str(models["vlm"]), "images": coco["images"]},
            output={"acts": target},
            params={
                "spec": _model_spec("paligemma"),
                "layers": LAYERS,
                "tokens": True,
                "extraction": EXTRACTION,
                "image_dir": str(coco["images"]),
                "shard": [i, 2],
            },
            wildcards={"model": "vlm", "dataset": "cats", "shard": str(i)},
        )
        shards.append(str(target))
    merged = work / "results/activations-merged/vlm/cats"
    run("merge_activations", input={"shards": shards}, output={"acts": merged}, params={"layers": LAYERS})
    for layer in LAYERS:
        a = read_activations(acts["vlm"] / f"layer-{layer}.h5")
        b = read_activations(merged / f"layer-{layer}.h5")
        assert list(a.example_id) == list(b.example_id)
        np.testing.assert_array_equal(a.label, b.label)
        np.testing.assert_array_equal(a.fold, b.fold)
        for pooling in ("mean", "last", "mean_image"):
            np.testing.assert_allclose(a.pooled(pooling), b.pooled(pooling), rtol=1e-4, atol=1e-5)
        ta, tb = a.tokens(), b.tokens()
        np.testing.assert_array_equal(ta.offsets_N1, tb.offsets_N1)
        np.testing.assert_array_equal(ta.ids_T, tb.ids_T)
        np.testing.assert_array_equal(ta.kinds_T, tb.kinds_T)
        np.testing.assert_allclose(ta.acts_TD, tb.acts_TD, rtol=1e-4, atol=1e-5)
        assert b.attrs["n_examples"] == a.attrs["n_examples"]
        assert b.attrs["n_tokens_image"] == a.attrs["n_tokens_image"]


def test_train_probe_modality_and_plot_probe_tasks(work, acts, probe_tables, run):
    o = {
        "results": work / "results/probes/modality/layer-2.tsv",
        "weights": work / "results/probes/modality/weights/layer-2",
    }
    run(
        "train_probe",
        input={"vlm": acts["vlm"]},
        output=o,
        params={
            "task": {"dataset": "cats", "target": "modality", "models": ["vlm"]},
            "settings": {"c_grid": [1.0], "seeds": [0], "inner_folds": 2},
            "seed": 0,
        },
        wildcards={"task": "modality", "layer": "2"},
    )
    t = pd.read_csv(o["results"], sep="\t")
    assert set(t["train_modality"]) == {"text vs image (sanity check)"} and set(t["target"]) == {"modality"}
    assert (Path(o["weights"]) / "vlm.modality.safetensors").exists()
    figs = {
        "pdf": work / "figs/probe_tasks.pdf",
        "png": work / "figs/probe_tasks.png",
        "tsv": work / "figs/probe_tasks.tsv",
    }
    run(
        "plot_probe_tasks",
        input={"probes": [str(o["results"])] + [str(p["results"]) for p in probe_tables]},
        output=figs,
        params={},
    )
    table = pd.read_csv(figs["tsv"], sep="\t")
    assert {
        "modality: within-model accuracy",
        "cats: within-model accuracy",
        "cats: transfer accuracy",
    } <= set(table["panel"])


def test_plot_contact_sheet(work, coco, run):
    out = {"manifest": work / "datasets/bright.tsv", "meta": work / "datasets/bright.json"}
    spec = {
        "modality": "attribute",
        "attribute": "brightness",
        "factors": [0.5, 1.5],
        "n_base": 6,
        "folds": 3,
    }
    run(
        "build_dataset",
        input=coco,
        output=out,
        params={"spec": spec, "split": "val2017", "seed": 0},
        wildcards={"dataset": "bright"},
    )
    df = pd.read_csv(out["manifest"], sep="\t", keep_default_na=False)
    assert sorted(set(df["transform"])) == ["brightness:0.5", "brightness:1.5"]
    assert df.groupby("group")["fold"].nunique().max() == 1  # variants of one image never straddle folds
    png = work / "figs/datasets/bright.png"
    run(
        "plot_contact_sheet",
        input={"manifest": out["manifest"], "images": coco["images"]},
        output={"png": png},
        params={"n": 4},
    )
    from PIL import Image

    assert Image.open(png).size[1] > 100
