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

    value = input.get("probes", [])
    figures.probe_tasks(
        [value] if isinstance(value, str) else list(value),
        out_pdf=output["pdf"],
        out_png=output["png"],
        out_tsv=output["tsv"],
    )


@step
def plot_contact_sheet(*, input, output, params, **_):
    """A contact sheet of an image dataset: each base image and its variants, as extraction sees them."""
    from repshift import datasets

    df, _ = datasets.read_manifest(input["manifest"])
    with atomic_path(output["png"]) as tmp:
        datasets.contact_sheet(df, input["images"], tmp, n=int(params.get("n", 8)))
