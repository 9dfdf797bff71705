"""Rule entry points of the extraction stage."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from repshift.config import ModelSpec
from repshift.formats.atomic import atomic_dir, write_json
from repshift.formats.layout import layer_file
from repshift.formats.provenance import provenance
from repshift.runtime import step

log = logging.getLogger(__name__)


@step
def extract_activations(*, input, output, params, threads=1, wildcards=None, **_):
    """Extract every configured layer of one model on one dataset to one HDF5 file per layer."""
    from repshift.formats import manifest as formats_manifest
    from repshift.models.adapter import load_adapter
    from repshift.models.extract import extract_dataset, plan_rows
    from repshift.models.tokens import check_same_token_ids, load_tokenizer

    ext = params["extraction"]
    name = (wildcards or {}).get("model") or params.get("model") or "model"
    spec = ModelSpec.from_dict(name, params["spec"])
    layers = [int(x) for x in params["layers"]]
    spec.check_layers(layers)
    manifest, meta = formats_manifest.read_manifest(input["manifest"])
    if manifest.empty:
        raise ValueError(f"dataset {input['manifest']} is empty: nothing to extract")
    if not spec.is_vlm and not (manifest["modality"] == "text").any():
        raise ValueError(f"{name} is a text-only model but dataset {input['manifest']} has only image rows")
    manifest = plan_rows(manifest, spec.is_vlm, spec.reads_text)
    shard, n_shards = (int(x) for x in params.get("shard", (0, 1)))
    if n_shards > 1:
        manifest = shard_rows(manifest, shard, n_shards)
    location = spec.id if spec.source == "hub" else str(input["model"])
    partners = params.get("token_partners") or {}
    if partners:  # a text-only comparison needs identical ids: checked on tokenizers, before the model loads
        texts = manifest.loc[manifest["modality"] == "text", "text"].astype(str).tolist()
        toks = {name: load_tokenizer(spec, location)}
        for other, p in partners.items():
            other_spec = ModelSpec.from_dict(other, p["spec"])
            toks[other] = load_tokenizer(other_spec, p["location"])
        n_checked = check_same_token_ids(texts, toks, max_tokens=ext["max_tokens"])
        log.info("token ids identical to %s on %d texts", sorted(partners), n_checked)
    adapter = load_adapter(spec, location=location, dtype=ext["dtype"], device=ext["device"])
    attrs = {
        "model_location": location,
        "model_revision": spec.revision if spec.source == "hub" else "",
        "dataset": Path(input["manifest"]).stem,
        "dataset_config_hash": meta.get("config_hash", ""),
        **provenance(params),
    }
    fused = params.get("fused") or {}
    sink = None
    if fused:  # extraction.fused_sae: encode here, keep codes + pooled vectors, no dense token rows
        from repshift.sae.encode import FusedEncoder

        fused = {**fused, "dataset": attrs["dataset"]}
        sink = FusedEncoder(
            fused,
            d_model=adapter.d_model,
            device=str(adapter.device),
            store_dtype=ext["store_dtype"],
            model=name,
            rows=manifest,
        )
    with atomic_dir(output["acts"]) as tmp:
        paths = {layer: layer_file(tmp, layer) for layer in layers}
        summary = extract_dataset(
            adapter,
            manifest,
            paths,
            image_dir=params["image_dir"],
            tokens=bool(params["tokens"]),
            batch_size=ext["batch_size"],
            max_tokens=ext["max_tokens"],
            store_dtype=ext["store_dtype"],
            attrs=attrs,
            token_sink=sink,
            workers=threads,
        )
        if sink is not None:
            sink.write(tmp, params)
        write_json(
            tmp / "extraction.json", {**summary, "layers": layers, "shard": [shard, n_shards], **attrs}
        )


def shard_rows(manifest: pd.DataFrame, shard: int, n_shards: int) -> pd.DataFrame:
    """Contiguous slice ``shard`` of ``n_shards`` of the rows a model sees (merging in shard order restores them)."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is not in 0..{n_shards - 1}")
    bounds = np.linspace(0, len(manifest), n_shards + 1).round().astype(int)
    return manifest.iloc[bounds[shard] : bounds[shard + 1]].reset_index(drop=True)


@step
def merge_activations(*, input, output, params, **_):
    """Merge one (model, dataset)'s extraction shards into the per-layer files of an unsharded extraction."""
    from repshift.formats.activations_h5 import merge_layer_files

    shards = [Path(p) for p in (input["shards"] if isinstance(input["shards"], list) else [input["shards"]])]
    with atomic_dir(output["acts"]) as tmp:
        for layer in params["layers"]:
            merge_layer_files([layer_file(s, layer) for s in shards], layer_file(tmp, layer))
        write_json(
            tmp / "extraction.json",
            {"merged_from": [str(s) for s in shards], "layers": params["layers"], **provenance(params)},
        )
