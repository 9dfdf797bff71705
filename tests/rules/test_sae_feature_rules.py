"""The SAE-feature rule scripts (class_features, sae_feature_probe, plot_sae_features) on tiny real files: a
manifest, an activation HDF5 file and a sparse-codes HDF5 file in the formats the workflow writes."""

import h5py
import numpy as np
import pandas as pd
import pytest

from repshift.formats import codes_h5
from repshift.formats.activations_h5 import POOLINGS, POSITION_KINDS, ActivationWriter, write_index
from repshift.formats.manifest import write_manifest
from repshift.sae.codes import SparseCodes

LAYER = 2
D_MODEL, D_SAE = 8, 32
CLASSES = ["cat", "dog", "bird"]
NP_ID = "gemma-2-2b/2-gemmascope-res-16k"
SETTINGS = {"c_grid": [0.1, 1.0], "inner_folds": 2, "seeds": [0, 1]}
ANALYSIS = {
    "sae": "demo",
    "dataset": "imgs",
    "top_k": 2,
    "max_image_fraction": 0.5,
    "n_top": 3,
    "poolings": ["sum", "topn-count"],
    "top_n": [2],
    "binarise": [False, True],
    "train_fractions": [0.5, 1.0],
}


def _write_inputs(root, *, released):
    """8 images per class (+ 3 caption rows that must be ignored). Image tokens: latent 0 on every token
    (generic), latent 20+c on one token of each class-c image; prompt tokens of cat images carry latent 31
    with a huge value (never read: not an image token)."""
    rng = np.random.default_rng(0)
    rows, token_codes, kinds, offsets = [], [], [], [0]
    n_img = 8 * len(CLASSES)
    for i in range(n_img):
        label = i % len(CLASSES)
        rows.append(
            {
                "example_id": f"img-{i}",
                "image_id": i,
                "group": i,
                "modality": "image",
                "file": f"{i}.png",
                "text": "",
                "captions": "",
                "label": label,
                "label_name": CLASSES[label],
                "transform": "",
                "fold": i % 4,
                "split": "train" if (i // 3) % 4 else "test",
            }
        )
        toks = [({}, "bos")]
        toks += [({0: 2.0 + rng.random(), int(rng.integers(3, 19)): rng.random()}, "image") for _ in range(3)]
        toks += [({0: 2.0, 20 + label: 3.0 + rng.random()}, "image")]
        toks += [({31: 50.0} if label == 0 else {}, "text")] * 2
        for code, kind in toks:
            token_codes.append(code)
            kinds.append(POSITION_KINDS[kind])
        offsets.append(offsets[-1] + len(toks))
    for j in range(3):
        rows.append(
            {
                "example_id": f"img-{j}-c0",
                "image_id": j,
                "group": j,
                "modality": "text",
                "file": f"{j}.png",
                "text": "a cat",
                "captions": "a cat",
                "label": j % 3,
                "label_name": CLASSES[j % 3],
                "transform": "",
                "fold": j % 4,
                "split": rows[j]["split"],
            }
        )
        token_codes += [{}, {31: 9.0}]
        kinds += [POSITION_KINDS["bos"], POSITION_KINDS["text"]]
        offsets.append(offsets[-1] + 2)
    df = pd.DataFrame(rows)
    if not released:
        df = df.drop(columns="split")
    manifest = root / "data/datasets/imgs.tsv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(df, {"dataset": "imgs"}, manifest)

    dense = np.zeros((len(token_codes), D_SAE), dtype=np.float32)
    for t, code in enumerate(token_codes):
        for latent, value in code.items():
            dense[t, latent] = value
    codes_dir = root / "results/sae/demo/vlm/imgs"
    codes_dir.mkdir(parents=True, exist_ok=True)
    path = codes_dir / f"layer-{LAYER}.codes.h5"
    codes_h5.write_codes(
        path,
        SparseCodes.from_dense(dense),
        example_offsets_N1=np.array(offsets),
        attrs={"layer": LAYER, "model": "vlm", "neuronpedia_id": NP_ID},
    )
    codes_h5.write_token_index(
        path,
        example_id=df["example_id"].to_numpy(),
        modality=df["modality"].to_numpy(),
        kinds_T=np.array(kinds),
        ids_T=np.arange(len(kinds)),
    )

    acts_dir = root / "results/activations/vlm/imgs"
    acts_dir.mkdir(parents=True, exist_ok=True)
    labels = df["label"].to_numpy()
    mean = rng.normal(size=(len(df), D_MODEL)) + 3.0 * np.eye(D_MODEL)[labels]
    with h5py.File(acts_dir / f"layer-{LAYER}.h5", "w") as f:
        write_index(f, df, {"model": "vlm", "layer": LAYER, "d_model": D_MODEL})
        w = ActivationWriter(f, n_examples=len(df), d_model=D_MODEL, store_dtype="float32", tokens=False)
        w.write_batch(np.arange(len(df)), {p: mean for p in POOLINGS}, np.zeros(len(df)), np.full(len(df), 4))
        w.finish()
    return {"codes": str(codes_dir), "acts": str(acts_dir), "manifest": str(manifest)}, df


@pytest.fixture(scope="module", params=[True, False], ids=["released-split", "folds"])
def inputs(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("sae-features")
    paths, df = _write_inputs(root, released=request.param)
    return {"root": root, "paths": paths, "df": df, "released": request.param}


WC = {"analysis": "an", "model": "vlm", "layer": str(LAYER)}


def test_class_features_rule(inputs, run):
    out = inputs["root"] / f"results/sae_features/an/vlm/layer-{LAYER}.class_features.tsv"
    run(
        "class_features",
        input=inputs["paths"],
        output={"table": out},
        params={
            "analysis": {k: ANALYSIS[k] for k in ("sae", "dataset", "top_k", "max_image_fraction", "n_top")}
        },
        wildcards=WC,
    )
    t = pd.read_csv(out, sep="\t")
    assert {
        "analysis",
        "sae",
        "model",
        "dataset",
        "layer",
        "class",
        "rank",
        "latent",
        "frequency",
        "overall_frequency",
        "neuronpedia",
    } <= set(t.columns)
    top1 = t[t["rank"] == 1].set_index("class")
    assert top1["latent"].to_dict() == {"cat": 20, "dog": 21, "bird": 22}
    assert (top1["frequency"] == 1.0).all()
    assert 0 not in set(t["latent"])  # in every image's top-2 set: dropped as generic
    assert 31 not in set(t["latent"])  # prompt-token and caption-row codes are never read
    assert top1.loc["dog", "neuronpedia"].endswith(f"{NP_ID}/21")
    assert (t["layer"] == LAYER).all() and set(t["n_dropped"]) == {1}


def test_sae_feature_probe_and_figure_rules(inputs, run):
    out = inputs["root"] / f"results/sae_features/an/vlm/layer-{LAYER}.probe.tsv"
    run(
        "sae_feature_probe",
        input=inputs["paths"],
        output={"results": out},
        params={"analysis": {**ANALYSIS, **SETTINGS}},
        wildcards=WC,
        threads=1,
    )
    t = pd.read_csv(out, sep="\t")
    assert set(t["features"]) == {"sum", "sum >0", "top2-count", "top2-count >0", "activations (mean)"}
    df = inputs["df"]
    images = df[df.modality == "image"]
    if inputs["released"]:
        assert set(t["split"]) == {"released"}
        assert (t["n_test"] == (images["split"] == "test").sum()).all()
    else:
        assert set(t["split"]) == {"folds"} and set(t["fold"]) == {0, 1, 2, 3}
        assert (t["n_test"] == 6).all()
    full = t[(t.metric == "macro_f1") & (t.train_fraction == 1.0)].groupby("features")["value"].mean()
    assert full["sum >0"] == pytest.approx(1.0) and full["top2-count"] == pytest.approx(1.0)
    assert full["activations (mean)"] > 0.6
    assert set(t["scaling"]) == {"global", "std"}

    figs = {k: inputs["root"] / f"figs/sae_features.{k}" for k in ("pdf", "png", "tsv")}
    run("plot_sae_features", input={"probes": [str(out)]}, output=figs, params={})
    table = pd.read_csv(figs["tsv"], sep="\t")
    assert set(table["panel"]) == {f"vlm, layer {LAYER}"}
    for _, r in table.iterrows():
        src = t[
            (t.features == r["series"]) & (t.metric == "macro_f1") & (t.train_fraction == r["train_fraction"])
        ]
        assert r["value"] == pytest.approx(src["value"].mean())
    assert figs["png"].stat().st_size > 5000 and figs["pdf"].stat().st_size > 5000
