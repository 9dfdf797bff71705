"""Steps of the figure stage: layer sweep, probe tasks, contact sheets."""

from __future__ import annotations

import logging
from pathlib import Path

from repshift.atomic import atomic_path
from repshift.steps._base import step

log = logging.getLogger(__name__)


@step
def plot_layer_sweep(*, input, output, params, **_):
    """The layer-sweep figure (PDF + PNG) and the tidy TSV of everything it plots."""
    from repshift import figures

    def paths(key):
        value = input.get(key, [])
        return [value] if isinstance(value, str) else list(value)

    transfer = [str(p) for d in paths("codes") for p in sorted(Path(d).glob("layer-*.transfer.tsv"))]
    transfer += paths("spliced")  # spliced-loss tables share the transfer tables' columns
    main = set(params.get("main_tasks", []))
    probe_tables = [p for p in paths("probes") if not main or Path(p).parent.name in main]
    figures.layer_sweep(
        paths("shift"),
        transfer,
        probe_tables,
        out_pdf=output["pdf"],
        out_png=output["png"],
        out_tsv=output["tsv"],
    )


@step
def plot_probe_tasks(*, input, output, params, **_):
    """One panel per probe task (semantic, modality, attributes): accuracy per layer with intervals (PDF, PNG, TSV)."""
    from repshift import figures

    figures.probe_tasks(
        _paths(input, "probes"),
        out_pdf=output["pdf"],
        out_png=output["png"],
        out_tsv=output["tsv"],
        vision_tasks=params.get("vision_tasks", []),
    )


def _paths(input, key) -> list[str]:
    value = input.get(key, [])
    return [value] if isinstance(value, str) else [str(p) for p in value]


@step
def plot_attribute_probes(*, input, output, params, **_):
    """Image-attribute probes (brightness, redness, ...) per layer, decoder streams and vision towers."""
    from repshift import figures

    figures.attribute_probes(
        _paths(input, "probes"),
        out_pdf=output["pdf"],
        out_png=output["png"],
        out_tsv=output["tsv"],
        vision_tasks=params.get("vision_tasks", []),
    )


@step
def plot_cross_modal_matrix(*, input, output, params, **_):
    """Layer x layer cross-modal transfer heatmaps from the score_cross_layer tables."""
    from repshift import figures

    figures.cross_modal_matrix(
        _paths(input, "tables"), out_pdf=output["pdf"], out_png=output["png"], out_tsv=output["tsv"]
    )


@step
def plot_learning_curves(*, input, output, params, **_):
    """Learning curves of the within-model probes at the layers that have one."""
    from repshift import figures

    figures.learning_curves(
        _paths(input, "probes"), out_pdf=output["pdf"], out_png=output["png"], out_tsv=output["tsv"]
    )


@step
def plot_contact_sheet(*, input, output, params, **_):
    """A contact sheet of an image dataset: each base image and its variants, as extraction sees them."""
    from repshift import datasets

    df, _ = datasets.read_manifest(input["manifest"])
    with atomic_path(output["png"]) as tmp:
        datasets.contact_sheet(df, input["images"], tmp, n=int(params.get("n", 8)))
