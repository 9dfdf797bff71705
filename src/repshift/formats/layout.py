"""Every results path: built and parsed here only.

Builders take the roots (``paths.data``, ``paths.results`` of the config) and names; a name may be a Snakemake
wildcard such as ``"{layer}"``, so the rules build their output patterns with the same functions the input
functions and the steps use. Parsers (:func:`layer_of`, :func:`layer_files`) read a layer back out of a name.
"""

from __future__ import annotations

import re
from pathlib import Path

LAYER_PREFIX = "layer-"
ACTIVATIONS = ".h5"  # layer-L.h5: one layer's activations (formats.activations_h5)
CODES = ".codes.h5"  # layer-L.codes.h5: one layer's sparse SAE codes (formats.codes_h5)
TRANSFER = ".transfer.tsv"  # layer-L.transfer.tsv: one layer's SAE transfer quality
TRANSFER_SUMMARY = "transfer.tsv"  # every layer's transfer quality of one codes folder
_LAYER_NAME = re.compile(r"^layer-(\d+)(\..+)?$")

PathLike = str | Path


def _layer(layer: int | str) -> str:
    """``"7"`` for 7 or "7"; a wildcard (``"{layer}"``) is kept as it is."""
    if isinstance(layer, str) and layer.startswith("{"):
        return layer
    return str(int(layer))


def layer_name(layer: int | str, suffix: str = "") -> str:
    """``layer-L`` plus ``suffix``: the name of one layer's file or folder."""
    return f"{LAYER_PREFIX}{_layer(layer)}{suffix}"


def layer_of(path: PathLike) -> int:
    """The layer L of a ``layer-L``, ``layer-L.h5``, ``layer-L.codes.h5``, ... path (its last component)."""
    m = _LAYER_NAME.match(Path(path).name)
    if not m:
        raise ValueError(
            f"{path}: not a per-layer results name; expected 'layer-<L>' or 'layer-<L>.<ext>' "
            "(e.g. layer-12.h5, layer-12.codes.h5, probes/<task>/weights/layer-12)"
        )
    return int(m.group(1))


def layer_files(folder: PathLike, suffix: str) -> dict[int, Path]:
    """``{L: folder/layer-L<suffix>}`` for every such file in ``folder``, in layer order (exact suffix only:
    ``.h5`` does not pick up ``.codes.h5``)."""
    found = {}
    for path in Path(folder).glob(f"{LAYER_PREFIX}*{suffix}"):
        m = _LAYER_NAME.match(path.name)
        if m and (m.group(2) or "") == suffix:
            found[int(m.group(1))] = path
    return dict(sorted(found.items()))


# -- files inside one folder --------------------------------------------------------------------------------
def layer_file(acts_dir: PathLike, layer: int | str) -> Path:
    """One layer's activations: ``{acts_dir}/layer-L.h5``."""
    return Path(acts_dir) / layer_name(layer, ACTIVATIONS)


def codes_file(codes_dir: PathLike, layer: int | str) -> Path:
    """One layer's sparse SAE codes: ``{codes_dir}/layer-L.codes.h5``."""
    return Path(codes_dir) / layer_name(layer, CODES)


def transfer_file(codes_dir: PathLike, layer: int | str) -> Path:
    """One layer's SAE transfer quality: ``{codes_dir}/layer-L.transfer.tsv``."""
    return Path(codes_dir) / layer_name(layer, TRANSFER)


def transfer_summary(codes_dir: PathLike) -> Path:
    """Every layer's transfer quality: ``{codes_dir}/transfer.tsv``."""
    return Path(codes_dir) / TRANSFER_SUMMARY


# -- data/ --------------------------------------------------------------------------------------------------
def manifest(data: str, dataset: str) -> str:
    return f"{data}/datasets/{dataset}.tsv"


def manifest_meta(data: str, dataset: str) -> str:
    return f"{data}/datasets/{dataset}.json"


def dataset_image_dir(data: str, dataset: str) -> str:
    """PNG export of a CIFAR-100 dataset."""
    return f"{data}/datasets/{dataset}/images"


def sae_family_dir(data: str, sae: str) -> str:
    return f"{data}/saes/{sae}"


def sae_fetched(data: str, sae: str, model: str) -> str:
    """Marker of one (pretrained SAE, model): every layer folder the model's jobs read is fetched."""
    return f"{sae_family_dir(data, sae)}/fetched-{model}.json"


def sae_layer_dir(data: str, sae: str, layer: int | str) -> str:
    """One layer's SAE folder (SAE.save_model layout)."""
    return f"{sae_family_dir(data, sae)}/{layer_name(layer)}"


# -- results/ -----------------------------------------------------------------------------------------------
def activations_dir(results: str, model: str, dataset: str) -> str:
    return f"{results}/activations/{model}/{dataset}"


def activation_shard_dir(results: str, model: str, dataset: str, shard: int | str) -> str:
    return f"{results}/activations/shards/{model}/{dataset}/shard-{shard}"


def encoded_dir(results: str, sae: str, model: str, dataset: str) -> str:
    """encode_sae's output folder (layer-L.codes.h5, layer-L.transfer.tsv, transfer.tsv)."""
    return f"{results}/sae/{sae}/{model}/{dataset}"


def shift_table(results: str, comparison: str) -> str:
    return f"{results}/sae/shift/{comparison}.tsv"


def shift_latents(results: str, comparison: str) -> str:
    return f"{results}/sae/shift/{comparison}.latents.tsv"


def spliced_table(results: str, sae: str, model: str, dataset: str) -> str:
    return f"{results}/sae/spliced/{sae}/{model}/{dataset}.tsv"


def probe_table(results: str, task: str, layer: int | str) -> str:
    return f"{results}/probes/{task}/{layer_name(layer, '.tsv')}"


def probe_weights(results: str, task: str, layer: int | str) -> str:
    return f"{results}/probes/{task}/weights/{layer_name(layer)}"


def cross_layer_table(results: str, task: str) -> str:
    return f"{results}/probes/{task}/cross_modal_layers.tsv"


def pixel_baseline_table(results: str, task: str) -> str:
    """The attribute task's probe on trivial pixel statistics (probes.baselines)."""
    return f"{results}/probes/{task}/pixel_baseline.tsv"


def task_of_probe_table(path: PathLike) -> str:
    """The task of ``.../probes/{task}/layer-L.tsv``."""
    layer_of(path)
    return Path(path).parent.name


def sae_feature_table(results: str, analysis: str, model: str, layer: int | str, kind: str) -> str:
    """kind: class_features or probe."""
    return f"{results}/sae_features/{analysis}/{model}/{layer_name(layer, f'.{kind}.tsv')}"


def figure(results: str, name: str, ext: str = "pdf") -> str:
    return f"{results}/figs/{name}.{ext}"


def contact_sheet(results: str, dataset: str) -> str:
    return f"{results}/figs/datasets/{dataset}.png"


# -- SAEs trained on the VLM itself (sae_training) -------------------------------------------------------
def trained_sae_dir(data: str, model: str, layer: int | str) -> str:
    """A trained SAE (SAE.save_model layout + repshift_source.json): ``{data}/saes/trained/{model}/layer-L``."""
    return f"{data}/saes/trained/{model}/{layer_name(layer)}"


def vlm_sae_table(results: str, model: str, layer: int | str, kind: str) -> str:
    """kind: curve, eval, compare, sharing or sparse."""
    return f"{results}/vlm_sae/{model}/{layer_name(layer, f'.{kind}.tsv')}"


# -- steering -----------------------------------------------------------------------------------------------
def steering_dir(results: str, model: str, pair: str) -> str:
    return f"{results}/steering/{model}/{pair}"


def steering_table(results: str, model: str, pair: str, layer: int | str) -> str:
    """One (model, pair, layer)'s measures: ``results/steering/{model}/{pair}/layer-L.tsv``."""
    return f"{steering_dir(results, model, pair)}/{layer_name(layer, '.tsv')}"


def steering_rollouts(results: str, model: str, pair: str, layer: int | str) -> str:
    return f"{steering_dir(results, model, pair)}/{layer_name(layer, '.rollouts.jsonl')}"


def steering_sparsity(results: str, model: str, pair: str, layer: int | str) -> str:
    return f"{steering_dir(results, model, pair)}/{layer_name(layer, '.sparsity.tsv')}"


def steering_directions(results: str, model: str, pair: str, layer: int | str) -> str:
    """Path stem of one layer's directions (``.safetensors`` + ``.json``)."""
    return f"{steering_dir(results, model, pair)}/directions/{layer_name(layer)}"


def probe_summary(results: str, task: str) -> str:
    """One task's probe summary over every layer (means, corrected intervals, permutation null)."""
    return f"{results}/probes/{task}/summary.tsv"
