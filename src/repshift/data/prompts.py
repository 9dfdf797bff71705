"""Prompt-set text datasets: fixed lists of sentences (inline in the config or one per line in a file).

A ``source: prompts`` dataset is text only. Its manifest has the layout of :mod:`repshift.datasets` (one text
row per prompt, in the given order) so that extraction, the SAE stage and probes read it unchanged:

* ``example_id`` ``"prompt-<first 12 hex digits of sha256(text)>"``: stable when prompts are added, removed
  or reordered; ``image_id`` = ``group`` = the same 48-bit number as an int (a prompt is its own group);
* ``modality`` ``text``, ``text`` the prompt, ``file``/``captions``/``transform`` empty;
* one class: ``label`` 0, ``label_name`` ``"prompt"``; ``fold`` assigned by
  :func:`repshift.formats.manifest.assign_folds` over min(folds, number of prompts) folds (0 for a single prompt).

Input rules: ``prompts_file`` is read as UTF-8 (a leading BOM is dropped; invalid UTF-8 is an error naming the
file and line); line endings are stripped; blank (whitespace-only) lines are skipped and counted; surrounding
whitespace is stripped; non-ASCII text is kept as is. Inline ``prompts`` get the same treatment except that an
empty inline prompt is an error (it can only be a config mistake). A prompt listed twice is an error naming both
positions (it would give two rows with one id). The sidecar records the spec, counts, what was skipped, the
file's sha256 and provenance.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from repshift.formats.manifest import MANIFEST_COLUMNS, _counts, assign_folds, check_manifest, write_manifest
from repshift.formats.provenance import config_hash, provenance

log = logging.getLogger(__name__)

LABEL_NAME = "prompt"


@dataclass(frozen=True)
class PromptSpec:
    """One ``source: prompts`` dataset of ``config.yaml``."""

    name: str
    prompts: tuple[str, ...] | None = None
    prompts_file: str | None = None
    folds: int = 5

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> PromptSpec:
        if d.get("source", "prompts") != "prompts":
            raise ValueError(f"dataset {name!r}: source must be prompts here, got {d['source']!r}")
        if d.get("modality", "text") != "text":
            raise ValueError(
                f"dataset {name!r}: prompt datasets are text-only, got modality {d['modality']!r}"
            )
        allowed = [f.name for f in dataclasses.fields(cls) if f.name != "name"]
        kw = {k: v for k, v in d.items() if k not in ("source", "modality")}
        for key in kw:
            if key not in allowed:
                raise ValueError(
                    f"dataset {name!r}: unknown key {key!r} for a prompt dataset "
                    f"(allowed: {', '.join(sorted(allowed))})"
                )
        prompts = kw.get("prompts")
        if prompts is not None:
            if isinstance(prompts, str) or not isinstance(prompts, Sequence):
                raise ValueError(f"dataset {name!r}: prompts must be a list of strings, got {prompts!r:.80}")
            kw["prompts"] = tuple(prompts)
        return cls(name=name, **kw)

    def __post_init__(self) -> None:
        n = f"dataset {self.name!r}"
        if (self.prompts is None) == (self.prompts_file is None):
            raise ValueError(f"{n}: give exactly one of `prompts` (a list) or `prompts_file` (a path)")
        if self.prompts is not None:
            if not self.prompts:
                raise ValueError(f"{n}: prompts is empty")
            for k, p in enumerate(self.prompts):
                if not isinstance(p, str) or not p.strip():
                    raise ValueError(f"{n}: prompts[{k}] must be a non-empty string, got {p!r}")
        if self.prompts_file is not None and (
            not isinstance(self.prompts_file, str) or not self.prompts_file
        ):
            raise ValueError(f"{n}: prompts_file must be a path, got {self.prompts_file!r}")
        if not isinstance(self.folds, int) or isinstance(self.folds, bool) or self.folds < 2:
            raise ValueError(f"{n}: folds must be an integer >= 2, got {self.folds!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": "prompts",
            "modality": "text",
            "prompts": None if self.prompts is None else list(self.prompts),
            "prompts_file": self.prompts_file,
            "folds": self.folds,
        }


def read_prompts_file(path: str | os.PathLike) -> tuple[list[tuple[int, str]], int]:
    """``([(line number, prompt), ...], number of blank lines skipped)`` of a UTF-8 file, one prompt a line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts_file not found: {path} (one prompt per line, UTF-8)")
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if raw.endswith(b"\n"):
        lines.pop()  # a final newline ends the last line; it is not a blank line
    out: list[tuple[int, str]] = []
    blank = 0
    for k, line in enumerate(lines, start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"{path}:{k}: not valid UTF-8 ({exc.reason} at byte {exc.start}); re-save the file as UTF-8"
            ) from exc
        if k == 1:
            text = text.removeprefix("\ufeff")
        text = text.strip()
        if text:
            out.append((k, text))
        else:
            blank += 1
    return out, blank


def prompt_id(text: str) -> tuple[str, int]:
    """Stable ``(example_id, group)`` of a prompt: both from the first 48 bits of sha256(text)."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return f"prompt-{digest}", int(digest, 16)


def build_prompt_manifest(spec: PromptSpec, *, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows and sidecar metadata of one prompt dataset (reads ``prompts_file`` when given)."""
    source: dict[str, Any]
    if spec.prompts_file is not None:
        entries, blank = read_prompts_file(spec.prompts_file)
        where = [f"{spec.prompts_file}:{line}" for line, _ in entries]
        texts = [t for _, t in entries]
        data = Path(spec.prompts_file).read_bytes()
        source = {"prompts_file": spec.prompts_file, "sha256": hashlib.sha256(data).hexdigest()}
    else:
        texts = [p.strip() for p in spec.prompts or ()]
        where = [f"prompts[{k}]" for k in range(len(texts))]
        blank = 0
        source = {"inline": True}
    if not texts:
        raise ValueError(f"dataset {spec.name!r}: {spec.prompts_file} holds no prompt (only blank lines)")
    seen: dict[str, str] = {}
    for text, at in zip(texts, where, strict=True):
        if text in seen:
            raise ValueError(
                f"dataset {spec.name!r}: the prompt at {at} repeats the one at {seen[text]}: {text!r:.80}"
            )
        seen[text] = at
    ids = [prompt_id(t) for t in texts]
    groups_N = np.array([g for _, g in ids], dtype=np.int64)
    labels_N = np.zeros(len(texts), dtype=np.int64)
    n_folds = min(spec.folds, len(texts))
    folds_N = (
        assign_folds(labels_N, groups_N, n_folds=n_folds, seed=seed) if n_folds >= 2 else labels_N.copy()
    )
    df = pd.DataFrame(
        {
            "example_id": [e for e, _ in ids],
            "image_id": groups_N,
            "group": groups_N,
            "modality": "text",
            "file": "",
            "text": texts,
            "captions": "",
            "label": labels_N,
            "label_name": LABEL_NAME,
            "transform": "",
            "fold": folds_N,
        }
    )[list(MANIFEST_COLUMNS)]
    check_manifest(df)
    if blank:
        log.info("dataset %s: skipped %d blank lines of %s", spec.name, blank, spec.prompts_file)
    n_non_ascii = sum(not t.isascii() for t in texts)
    meta = {
        "dataset": spec.name,
        "spec": spec.to_dict(),
        "seed": seed,
        "config_hash": config_hash(spec.to_dict()),
        "label_names": [LABEL_NAME],
        "n_rows": len(df),
        "n_folds": max(n_folds, 1),
        "counts": _counts(df, [LABEL_NAME]),
        "skipped": {"blank_lines": blank} if blank else {},
        "non_ascii_prompts": n_non_ascii,
        "source": source,
        "provenance": provenance({"spec": spec.to_dict(), "seed": seed}),
    }
    log.info("dataset %s: %d prompts (%d non-ASCII)", spec.name, len(df), n_non_ascii)
    return df, meta


def build_prompt_dataset(
    name: str, spec: Mapping[str, Any] | PromptSpec, *, out_tsv: str | os.PathLike, seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """build_prompt_manifest + write_manifest (TSV + JSON sidecar): the body of the rule."""
    spec = spec if isinstance(spec, PromptSpec) else PromptSpec.from_dict(name, spec)
    df, meta = build_prompt_manifest(spec, seed=seed)
    write_manifest(df, meta, out_tsv)
    return df, meta


__all__ = [
    "LABEL_NAME",
    "PromptSpec",
    "build_prompt_dataset",
    "build_prompt_manifest",
    "prompt_id",
    "read_prompts_file",
]
