"""Rule entry points of the figure stage."""

from __future__ import annotations

import logging

import pandas as pd

from repshift.figures.style import Palette
from repshift.formats import layout
from repshift.formats.atomic import atomic_path
from repshift.runtime import step

log = logging.getLogger(__name__)


@step
def plot_layer_sweep(*, input, output, params, **_):
    """The layer-sweep figure (PDF + PNG) and the tidy TSV of everything it plots."""
    from repshift.figures import layer_sweep

    def paths(key):
        value = input.get(key, [])
        return [value] if isinstance(value, str) else list(value)

    transfer = [str(p) for d in paths("codes") for p in layout.layer_files(d, layout.TRANSFER).values()]
    transfer += paths("spliced")  # spliced-loss tables share the transfer tables' columns
    main = set(params.get("main_tasks", []))
    probe_tables = [p for p in paths("probes") if not main or layout.task_of_probe_table(p) in main]
    layer_sweep.layer_sweep(
        paths("shift"),
        transfer,
        probe_tables,
        out_pdf=output["pdf"],
        out_png=output["png"],
        out_tsv=output["tsv"],
        palette=Palette.from_params(params.get("palette")),
        min_examples=int(params.get("min_examples", layer_sweep.MIN_EXAMPLES)),
    )


@step
def plot_probe_tasks(*, input, output, params, **_):
    """One panel per probe task (semantic, modality, attributes): accuracy per layer with intervals (PDF, PNG, TSV)."""
    from repshift.figures import probes as figures_probes

    figures_probes.probe_tasks(
        _paths(input, "probes"),
        out_pdf=output["pdf"],
        out_png=output["png"],
        out_tsv=output["tsv"],
        vision_tasks=params.get("vision_tasks", []),
        tasks=params.get("tasks", []),
        palette=Palette.from_params(params.get("palette")),
    )


def _paths(input, key) -> list[str]:
    value = input.get(key, [])
    return [value] if isinstance(value, str) else [str(p) for p in value]


@step
def plot_attribute_probes(*, input, output, params, **_):
    """Image-attribute probes (brightness, redness, ...) per layer, decoder streams and vision towers."""
    from repshift.figures import probes as figures_probes

    figures_probes.attribute_probes(
        _paths(input, "probes"),
        out_pdf=output["pdf"],
        out_png=output["png"],
        out_tsv=output["tsv"],
        vision_tasks=params.get("vision_tasks", []),
        palette=Palette.from_params(params.get("palette")),
    )


@step
def plot_cross_modal_matrix(*, input, output, params, **_):
    """Layer x layer cross-modal transfer heatmaps from the score_cross_layer tables."""
    from repshift.figures import probes as figures_probes

    figures_probes.cross_modal_matrix(
        _paths(input, "tables"),
        out_pdf=output["pdf"],
        out_png=output["png"],
        out_tsv=output["tsv"],
        palette=Palette.from_params(params.get("palette")),
    )


@step
def plot_learning_curves(*, input, output, params, **_):
    """Learning curves of the within-model probes at the layers that have one."""
    from repshift.figures import probes as figures_probes

    figures_probes.learning_curves(
        _paths(input, "probes"), out_pdf=output["pdf"], out_png=output["png"], out_tsv=output["tsv"]
    )


@step
def plot_contact_sheet(*, input, output, params, **_):
    """A contact sheet of an image dataset: each base image and its variants, as extraction sees them."""
    from repshift.data import images as data_images
    from repshift.formats import manifest as formats_manifest

    df, _ = formats_manifest.read_manifest(input["manifest"])
    with atomic_path(output["png"]) as tmp:
        data_images.contact_sheet(df, input["images"], tmp, n=int(params.get("n", 8)))


log = logging.getLogger(__name__)


def _as_list(value) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


@step
def plot_latent_density(*, input, output, params, **_):
    """Histograms of log10 latent firing frequency per model and layer, dead latents apart (PDF, PNG, TSV)."""
    from repshift.figures import sae as figures_sae

    figures_sae.plot_latent_density(
        _as_list(input.get("codes", [])),
        out_pdf=output["pdf"],
        out_png=output["png"],
        out_tsv=output["tsv"],
        palette=Palette.from_params(params.get("palette")),
    )


@step
def plot_latents_shift(*, input, output, params, **_):
    """Latents gained and lost per layer, and the top-latents table with Neuronpedia links (PDF, PNG, TSV)."""
    from repshift.figures import sae as figures_sae

    figures_sae.plot_latents_shift(
        _as_list(input.get("latents", [])),
        out_pdf=output["pdf"],
        out_png=output["png"],
        out_tsv=output["tsv"],
        palette=Palette.from_params(params.get("palette")),
    )


log = logging.getLogger(__name__)


@step
def plot_sae_features(*, input, output, params, **_):
    """Macro-F1 against training fraction per layer: SAE-feature variants beside raw activations (PDF, PNG, TSV)."""
    from repshift.figures import sae_features
    from repshift.figures.style import write_table

    value = input.get("probes", [])
    paths = [value] if isinstance(value, str) else list(value)
    frames = [pd.read_csv(p, sep="\t") for p in paths]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["analysis"])
    table = (
        sae_features.figure_table(rows) if len(rows) else pd.DataFrame(columns=sae_features.FIGURE_COLUMNS)
    )
    palette = Palette.from_params(params.get("palette"))
    table = sae_features.with_colors(table, palette)
    sae_features.plot_figure(table, out_pdf=output["pdf"], out_png=output["png"])
    write_table(table, output["tsv"])


@step
def plot_vlm_sae(*, input, output, params, **_):
    """The trained-SAE figures: quality by modality, dictionary match, modality sharing, sparse probes."""
    from repshift.figures import vlm_sae

    def read(key):
        value = input.get(key, [])
        paths = [value] if isinstance(value, str) else list(value)
        return pd.concat([pd.read_csv(p, sep="\t") for p in paths], ignore_index=True)

    tables = {kind: read(kind) for kind in ("curve", "eval", "compare", "sharing", "sparse")}
    vlm_sae.draw_all(tables, output, Palette.from_params(params.get("palette")))


@step
def write_reproduction(*, input, output, params, **_):
    """results/reproduction.tsv: each published number beside this run's counterpart (empty where none)."""
    from repshift.figures.reproduction import write_reproduction_table

    write_reproduction_table(params["results"], output["tsv"])
