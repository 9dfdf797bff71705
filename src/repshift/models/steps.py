"""Rule entry points of the extraction stage."""

from __future__ import annotations

import logging
from pathlib import Path

from repshift.config import ModelSpec
from repshift.formats.atomic import atomic_dir, write_json
from repshift.formats.layout import layer_file
from repshift.formats.provenance import provenance
from repshift.runtime import step

log = logging.getLogger(__name__)


@step
def extract_activations(*, input, output, params, threads=1, wildcards=None, **_):
    """Extract every configured layer of one model on one dataset to one HDF5 file per layer."""
    from repshift.models.extract import extract_to_dir

    name = (wildcards or {}).get("model") or params.get("model") or "model"
    spec = ModelSpec.from_dict(name, params["spec"])
    extract_to_dir(
        spec,
        input["manifest"],
        output["acts"],
        layers=[int(x) for x in params["layers"]],
        extraction=params["extraction"],
        location=spec.id if spec.source == "hub" else str(input["model"]),
        image_dir=params["image_dir"],
        tokens=bool(params["tokens"]),
        provenance_params=params,
        shard=tuple(int(x) for x in params.get("shard", (0, 1))),
        token_partners=params.get("token_partners") or {},
        fused=params.get("fused") or {},
        workers=threads,
    )


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
