"""Steps of the probe stage: probe training and evaluation."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pandas as pd

from repshift.formats import layout
from repshift.formats.atomic import atomic_dir, atomic_path
from repshift.formats.layout import layer_file
from repshift.runtime import step

log = logging.getLogger(__name__)


@step
def train_probe(*, input, output, params, threads=1, wildcards=None, **_):
    """Within-model, cross-model and cross-modal probes of one task at one layer, with controls.

    Each (model, modality) probe is fit once per (seed, outer fold) and scored in every space it transfers to:
    its own held-out rows (within-model), the other model's rows of the same inputs (cross-model) and the other
    modality's rows of the same images (cross-modal). The fold probes are saved for later scoring (e.g. the
    layer x layer cross-modal matrix), and a final probe on all rows per (model, modality) for directions.
    """
    from repshift.formats.activations_h5 import read_activations
    from repshift.probes import cv as probes_cv
    from repshift.probes.tasks import probe_layer

    wc = wildcards or {}
    layer = int(wc.get("layer", params.get("layer", 0)))
    settings = probes_cv.ProbeSettings.from_dict({**params.get("settings", {}), "n_jobs": int(threads)})
    if settings.curve_layers and layer not in settings.curve_layers:
        settings = dataclasses.replace(settings, train_fractions=())
    acts = {m: read_activations(layer_file(path, layer)) for m, path in input.items()}
    with atomic_dir(Path(output["weights"])) as wdir:
        table = probe_layer(acts, params["task"], settings, wdir)
    table.insert(0, "layer", layer)
    table.insert(0, "task", wc.get("task", ""))
    with atomic_path(output["results"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


@step
def pixel_baseline(*, input, output, params, threads=1, wildcards=None, **_):
    """The attribute task's probe on trivial pixel statistics (mean luma, channel means and spreads, chroma,
    sharpness, black corners) of each variant as the model receives it, with the manifest's folds: the score an
    activation probe has to beat. Rows in train_probe's format (layer -1, model ``pixels``)."""
    from repshift.formats.manifest import read_manifest
    from repshift.probes import baselines
    from repshift.probes import cv as probes_cv

    df, meta = read_manifest(input["manifest"])
    spec = meta.get("spec", {})
    input_size = params.get("input_size", spec.get("input_size")) or baselines.DEFAULT_INPUT_SIZE
    image_dir = input.get("images") or meta.get("image_dir")
    if not image_dir:
        raise ValueError(f"pixel_baseline: no image folder for {input['manifest']} (pass input images)")
    settings = probes_cv.ProbeSettings.from_dict({**params.get("settings", {}), "n_jobs": int(threads)})
    table = baselines.pixel_baseline(df, image_dir, settings=settings, input_size=int(input_size))
    table.insert(0, "layer", -1)
    table.insert(0, "task", (wildcards or {}).get("task", ""))
    table = table.assign(
        transfer="within",
        test_model="pixels",
        test_modality="image",
        train_model="pixels",
        train_modality="image",
        pooling="pixel-statistics",
        target="label",
    )
    with atomic_path(output["results"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


@step
def score_cross_layer(*, input, output, params, wildcards=None, **_):
    """Layer x layer cross-modal transfer of one task: the fold probes train_probe saved at each layer (captions,
    images) scored on the other modality's rows at every layer, without refitting."""
    from repshift.probes.tasks import cross_layer_table

    weights = input["weights"]
    weights = [weights] if isinstance(weights, str) else list(weights)
    by_layer = {layout.layer_of(w): Path(w) for w in weights}
    layers = [int(x) for x in params["layers"]]
    missing = sorted(set(layers) - set(by_layer))
    if missing:
        raise ValueError(f"no probe weights for layer(s) {missing}; expected folders named layer-<L>")
    table = cross_layer_table(
        params["task"], layers, by_layer, {m: input[m] for m in params["task"].get("cross_modal", [])}
    )
    table.insert(0, "task", (wildcards or {}).get("task", params.get("name", "")))
    with atomic_path(output["results"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


#: Columns that name one probe series in train_probe's tables (summarised separately).
SERIES_COLUMNS = (
    "task",
    "layer",
    "transfer",
    "train_model",
    "train_modality",
    "test_model",
    "test_modality",
    "pooling",
    "target",
)


def summarize_tables(table: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """:func:`repshift.probes.summary.summarize` per probe series (:data:`SERIES_COLUMNS`) of train_probe rows:
    mean, corrected interval over the distinct fold-runs, permutation-null band and p-value."""
    from repshift.probes.summary import summarize

    keys = [c for c in SERIES_COLUMNS if c in table]
    frames = []
    for key, sub in table[table["probe"] != "direction"].groupby(keys, sort=True, dropna=False):
        frames.append(summarize(sub, confidence=confidence).assign(**dict(zip(keys, key, strict=True))))
    if not frames:
        return pd.DataFrame(columns=keys)
    out = pd.concat(frames, ignore_index=True)
    return out[keys + [c for c in out.columns if c not in keys]]


@step
def summarize_probes(*, input, output, params, wildcards=None, **_):
    """One task's probe summary over every layer: per series, probe and metric the mean, the corrected 95%
    interval over repeats x folds fold-runs, and the permutation null (mean, 95% band, p-value)."""
    tables = input["tables"]
    tables = [tables] if isinstance(tables, str) else list(tables)
    frames = [pd.read_csv(t, sep="\t") for t in tables]
    summary = summarize_tables(pd.concat(frames, ignore_index=True))
    log.info("%d summary rows from %d probe tables", len(summary), len(tables))
    with atomic_path(output["summary"]) as tmp:
        summary.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
