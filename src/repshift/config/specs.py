"""Typed, frozen views of config sections (no I/O, no Snakemake)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repshift.models.families import VLM_FAMILIES  # derived from the family table (no torch import)

HUB_HELP = (
    "The real preset needs network access to the Hugging Face hub and, for the gated Gemma models, a token "
    "of an account that accepted their licence (`hf auth login` or HF_TOKEN). To run offline, use "
    "the demo preset: `make demo`."
)


class ConfigError(ValueError):
    """A config value that is wrong, with what to change."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    source: str
    num_layers: int
    id: str | None = None
    revision: str = "main"
    path: str | None = None
    image_prompt: str = ""
    stream: str = "decoder"
    demo: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> ModelSpec:
        known = {"family", "source", "num_layers", "id", "revision", "path", "image_prompt", "stream", "demo"}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"models.{name}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(name=name, **{k: v for k, v in d.items() if k in known})

    @property
    def is_vlm(self) -> bool:
        return self.family in VLM_FAMILIES

    @property
    def reads_text(self) -> bool:
        """Whether text-only inputs go through this stream (the decoder; not a vision tower)."""
        return self.stream == "decoder"

    def location(self, data_dir: str | Path) -> str:
        """What ``from_pretrained`` is given: a hub id, a local folder, or the generated demo folder."""
        if self.source == "hub":
            return str(self.id)
        if self.source == "local":
            return str(self.path)
        return str(Path(data_dir) / "models" / self.name)

    def check_layers(self, layers: list[int]) -> None:
        bad = [layer for layer in layers if not 0 <= layer < self.num_layers]
        if bad:
            raise ConfigError(
                f"layer {bad[0]} requested but {self.name} has {self.num_layers} blocks "
                f"(0-{self.num_layers - 1}); layer L means the output of block L"
            )


def model_spec(cfg: Mapping[str, Any], name: str) -> ModelSpec:
    if name not in cfg["models"]:
        raise ConfigError(f"unknown model {name!r}; configured models: {sorted(cfg['models'])}")
    return ModelSpec.from_dict(name, cfg["models"][name])
