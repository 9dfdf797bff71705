"""Rule entry points of the SAE stage."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from repshift.formats.atomic import atomic_path
from repshift.formats.provenance import provenance
from repshift.runtime import step
from repshift.sae.encode import (
    _device,
)
from repshift.sae.feature_probe import load_image_codes, manifest_rows

log = logging.getLogger(__name__)


@step
def fetch_sae(*, input, output, params, **_):
    """Fetch one pretrained SAE (sae-lens release + id) into a local folder (needs the hub once)."""
    from repshift.sae import load as sae_load

    sae_load.fetch_pretrained_sae(params["release"], params["sae_id"], output["sae"])


@step
def collect_sae(*, input, output, params, wildcards=None, **_):
    """The marker of one (pretrained SAE, model): its layer folders (each must exist), with provenance."""
    from repshift.formats.atomic import write_json
    from repshift.formats.provenance import provenance

    layers = {str(k): str(v) for k, v in params["sae_dirs"].items()}
    missing = [d for d in layers.values() if not Path(d).is_dir()]
    if missing:
        raise FileNotFoundError(f"SAE folder(s) not fetched: {missing}")
    record = {
        "sae": (wildcards or {}).get("sae", ""),
        "model": (wildcards or {}).get("model", ""),
        "layers": layers,
    }
    write_json(output["marker"], {**record, "provenance": provenance(params)})


@step
def encode_sae(*, input, output, params, wildcards=None, **_):
    """Encode one model's token-level activations with each layer's SAE; transfer metrics per position kind."""
    from repshift.sae.encode import encode_layers

    wc = wildcards or {}
    encode_layers(
        input["acts"],
        output["codes"],
        {int(k): v for k, v in params["sae_dirs"].items()},
        params["layers"],
        device=_device(params.get("device", "auto")),
        labels={"sae": wc.get("sae", ""), "dataset": wc.get("dataset", "")},
        provenance_params=params,
    )


@step
def compare_sae(*, input, output, params, wildcards=None, **_):
    """Shift between two models' SAE codes at every layer, on identical text tokens (ids asserted equal)."""
    from repshift.sae.encode import compare_code_dirs

    name = (wildcards or {}).get("comparison", "")
    shift, latents = compare_code_dirs(
        input["base"],
        input["adapted"],
        params["layers"],
        params["comparison"],
        name,
        n_boot=int(params.get("bootstrap", 200)),
        seed=int(params.get("seed", 0)),
    )
    _write_tsv(shift, output["shift"])
    _write_tsv(latents, output["latents"])


@step
def spliced_loss(*, input, output, params, wildcards=None, **_):
    """CE loss with each layer's SAE reconstruction spliced into the model's own forward pass (text rows)."""
    from repshift.config import ModelSpec
    from repshift.models.adapter import load_adapter
    from repshift.sae import spliced as sae_spliced

    wc = wildcards or {}
    name = wc.get("model") or params.get("model") or "model"
    spec = ModelSpec.from_dict(name, params["spec"])
    ext, cfg = params["extraction"], params["spliced"]
    texts = sae_spliced.text_prompts(input["manifest"], cfg.get("max_prompts"), int(params.get("seed", 0)))
    location = spec.id if spec.source == "hub" else str(input["model"])
    adapter = load_adapter(spec, location=location, dtype=ext["dtype"], device=ext["device"])
    labels = {"sae": wc.get("sae", ""), "model": name, "dataset": wc.get("dataset", "")}
    table = sae_spliced.spliced_loss_table(
        adapter,
        params["sae_dirs"],
        texts,
        max_tokens=ext["max_tokens"],
        batch_size=cfg.get("batch_size", 8),
        labels=labels,
        n_boot=int(params.get("bootstrap", 200)),
        seed=int(params.get("seed", 0)),
    )
    _write_tsv(table, output["tsv"])


log = logging.getLogger(__name__)


#: classifier settings an sae_features entry may set (defaults: repshift.probes.cv.ProbeSettings)
SETTING_KEYS = ("c_grid", "inner_folds", "seeds", "max_iter")


def _sf_common(params, wildcards, layer) -> dict:
    a = params["analysis"]
    return {
        "analysis": (wildcards or {}).get("analysis", params.get("name", "")),
        "sae": a["sae"],
        "model": (wildcards or {}).get("model", ""),
        "dataset": a["dataset"],
        "layer": int(layer),
    }


@step
def class_features(*, input, output, params, wildcards=None, **_):
    """Per class, the SAE latents most often in its images' top-k sets, after dropping generic latents."""
    from repshift.sae import class_features

    wc = wildcards or {}
    a = params["analysis"]
    layer = int(wc.get("layer", params.get("layer", 0)))
    x, attrs = load_image_codes(input["codes"], layer)
    rows = manifest_rows(input["manifest"], x.example_id_E)
    names = dict(zip(rows["label"].astype(int), rows["label_name"].astype(str), strict=True))
    top = class_features.image_top_k(class_features.pool_sum(x), int(a.get("top_k", 10)))
    table, dropped = class_features.class_features(
        top,
        rows["label"].to_numpy(dtype=np.int64),
        names,
        max_image_fraction=float(a.get("max_image_fraction", 0.1)),
        n_top=int(a.get("n_top", 10)),
        neuronpedia_id=attrs.get("neuronpedia_id") or None,
    )
    common = _sf_common(params, wc, layer)
    table = table.assign(**common, top_k=int(a.get("top_k", 10)), n_dropped=int(dropped.size))
    cols = list(common) + list(class_features.CLASS_FEATURE_COLUMNS) + ["top_k", "n_dropped"]
    with atomic_path(output["table"]) as tmp:
        table[cols].to_csv(tmp, sep="\t", index=False, float_format="%.6g")


@step
def sae_feature_probe(*, input, output, params, threads=1, wildcards=None, **_):
    """Classify the dataset's classes from pooled SAE features (each pooling, raw and binarised) and from the
    raw pooled activations of the same rows, at every training fraction (macro-F1, accuracy)."""
    from repshift.probes import cv as probes_cv
    from repshift.sae import class_features
    from repshift.sae.feature_probe import feature_probe_table

    wc = wildcards or {}
    a = params["analysis"]
    layer = int(wc.get("layer", params.get("layer", 0)))
    # the analysis' own classifier settings (never probes.settings: a probe-stage change must not rerun this)
    settings = {k: a[k] for k in SETTING_KEYS if k in a}
    settings = probes_cv.ProbeSettings.from_dict({**settings, "n_jobs": int(threads)})
    table = feature_probe_table(input["codes"], input["acts"], input["manifest"], layer, a, settings)
    common = _sf_common(params, wc, layer)
    _write_tsv(table.assign(**common)[list(common) + list(class_features.ROW_COLUMNS)], output["results"])


# -- SAEs trained on the VLM itself (sae_training) -----------------------------------------------------------
@step
def train_vlm_sae(*, input, output, params, wildcards=None, **_):
    """Train one layer's SAE on the model's own residual stream (streamed, mixed, shuffled; sae-lens trainer)."""
    from repshift.sae import train as sae_train

    wc = wildcards or {}
    name = wc.get("model") or params["model"]
    layer = int(wc.get("layer", params.get("layer", 0)))
    tr = params["training"]
    tspec = sae_train.TrainSpec.from_dict({**tr["train"], "seed": int(params.get("seed", 0))})
    adapter, manifest = _adapter_and_manifest(name, params["spec"], params["extraction"], input)
    rows = manifest[~manifest["fold"].isin(tr["heldout_folds"])].reset_index(drop=True)
    sae, scale, curve = sae_train.train_layer_sae(
        adapter,
        rows,
        layer,
        tspec,
        image_dir=input.get("images") or None,
        extraction=params["extraction"],
        model_name=name,
    )
    info = {
        "layer": layer,
        "model": name,
        "input_scale": scale,
        "train": tspec.to_dict(),
        **provenance(params),
    }
    sae_train.save_trained_sae(sae, output["sae"], info=info)
    sae_train.write_curve(curve.assign(model=name, layer=layer), output["curve"])


@step
def evaluate_vlm_sae(*, input, output, params, wildcards=None, **_):
    """The trained SAE beside the base model's on held-out tokens: metrics by modality, spliced CE, dictionary
    match, modality sharing and k-sparse probes (one pass of the model)."""
    from repshift.sae import evaluate_vlm as ev
    from repshift.sae import load as sae_load

    wc = wildcards or {}
    name, layer = wc.get("model") or params["model"], int(wc.get("layer", params.get("layer", 0)))
    adapter, manifest = _adapter_and_manifest(name, params["spec"], params["extraction"], input)
    saes = {"trained": sae_load.load_sae(input["sae"])}
    if params.get("base_sae_dir"):  # no base SAE configured: the trained one is evaluated alone
        saes["base"] = sae_load.load_sae(params["base_sae_dir"])
    tables = ev.evaluate_trained_sae(
        adapter, saes, manifest, layer, image_dir=input.get("images") or None,
        extraction=params["extraction"], training=params["training"], common={"model": name, "layer": layer},
    )  # fmt: skip
    for key in ("eval", "compare", "sharing", "sparse"):
        _write_tsv(tables[key], output[key])


def _adapter_and_manifest(name: str, spec_dict, extraction, input):
    """The model (hub id, or the rule's ``model`` input folder) and the dataset's manifest."""
    from repshift.config import ModelSpec
    from repshift.formats import manifest as formats_manifest
    from repshift.models.adapter import load_adapter

    spec = ModelSpec.from_dict(name, spec_dict)
    manifest, _ = formats_manifest.read_manifest(input["manifest"])
    location = spec.id if spec.source == "hub" else str(input["model"])
    adapter = load_adapter(spec, location=location, dtype=extraction["dtype"], device=extraction["device"])
    return adapter, manifest


def _write_tsv(df: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
