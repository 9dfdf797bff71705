"""One dispatch over dataset sources (coco | cifar100 | imagenet | prompts): spec from config, build."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import pandas as pd

from repshift.data.coco import DatasetSpec, build_manifest, load_coco
from repshift.data.images import contact_sheet
from repshift.formats.manifest import write_manifest

logger = logging.getLogger(__name__)


SOURCES = ("coco", "cifar100", "imagenet", "prompts")


def spec_from_config(name: str, d: Mapping[str, Any]) -> Any:
    """The typed spec of one ``datasets:`` entry, by its ``source`` (default coco): a :class:`DatasetSpec`,
    :class:`repshift.data.cifar.CifarSpec` or :class:`repshift.data.prompts.PromptSpec`. Raises ValueError naming the
    dataset and the key for anything that does not fit that source."""
    source = d.get("source", "coco")
    if source == "cifar100":
        from repshift.data.cifar import CifarSpec

        return CifarSpec.from_dict(name, d)
    if source == "imagenet":
        from repshift.data.imagenet import ImagenetSpec

        return ImagenetSpec.from_dict(name, d)
    if source == "prompts":
        from repshift.data.prompts import PromptSpec

        return PromptSpec.from_dict(name, d)
    if source != "coco":
        raise ValueError(f"dataset {name!r}: source {source!r} is not one of {SOURCES}")
    return DatasetSpec.from_dict(name, d)


def build_dataset(
    name: str,
    spec: Mapping[str, Any] | DatasetSpec,
    *,
    annotations_dir: str | os.PathLike,
    image_dir: str | os.PathLike,
    out_tsv: str | os.PathLike,
    seed: int,
    split: str = "val2017",
    contact_png: str | os.PathLike | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """load_coco + build_manifest + write_manifest (+ contact_sheet when it has images): the rule's body."""
    spec = spec if isinstance(spec, DatasetSpec) else DatasetSpec.from_dict(name, spec)
    coco = load_coco(annotations_dir, split)
    df, meta = build_manifest(spec, coco, image_dir=image_dir, seed=seed)
    write_manifest(df, meta, out_tsv)
    if contact_png is not None:
        if (df["modality"] == "image").any():
            contact_sheet(df, image_dir, contact_png)
        else:
            logger.info("dataset %s is text-only: no contact sheet", name)
    return df, meta
