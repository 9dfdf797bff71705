"""Loading a VLM's processor: :func:`load_processor` (``AutoProcessor``, or the family row's
``processor_loader``, a function of this module), the same way for hub, local and demo folders.

Qwen2-VL: in transformers 5.23 ``Qwen2VLProcessor`` always declares a video processor, whose base class needs
torchvision, and ``ProcessorMixin`` type-checks every declared sub-processor (``video_processor=None`` fails too),
so ``AutoProcessor`` and ``Qwen2VLProcessor(...)`` both fail without torchvision. torchvision from PyPI cannot
load against a CPU-only torch build, so this module never asks for it: :class:`Qwen2VLImageTextProcessor` is
``Qwen2VLProcessor`` with the video processor left out of its declared parts. Everything else is inherited:
``<|image_pad|>`` expansion (``grid_t * grid_h * grid_w / merge_size**2`` per image), ``image_grid_thw``,
``mm_token_type_ids``. Its image processor is the PIL one (``Qwen2VLImageProcessorPil``), whether or not
torchvision is installed, so that activations do not depend on which backend a machine happens to have.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import AutoProcessor, AutoTokenizer, Qwen2VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from repshift.models.families import Family

#: the class name written to processor_config.json / tokenizer_config.json, so that a saved folder reads like a
#: hub Qwen2-VL folder (``AutoProcessor`` loads it where torchvision is installed)
_SAVED_AS = "Qwen2VLProcessor"


class Qwen2VLImageTextProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` for images and text only (no video processor, hence no torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        if not isinstance(image_processor, Qwen2VLImageProcessorPil):
            raise TypeError(
                f"Qwen2VLImageTextProcessor needs a Qwen2VLImageProcessorPil, got {type(image_processor).__name__}: "
                "load it with load_qwen2_vl_processor(folder)"
            )
        # the parent passes video_processor=None on; ProcessorMixin only pairs the parts this signature declares
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["processor_class"] = _SAVED_AS
        return out


def load_qwen2_vl_processor(location: str | os.PathLike, **kwargs: Any) -> Qwen2VLImageTextProcessor:
    """The Qwen2-VL processor of a hub id or folder (``kwargs``: ``revision`` and other ``from_pretrained``
    options): its tokenizer and its ``preprocessor_config.json`` read into the PIL image processor."""
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(location, **kwargs)
    return Qwen2VLImageTextProcessor(image_processor, tokenizer, chat_template=tokenizer.chat_template)


def load_processor(fam: Family, location: str | os.PathLike, **kwargs: Any) -> Any:
    """The processor of a VLM of family ``fam`` (``kwargs``: ``revision`` and other ``from_pretrained`` options)."""
    if not fam.vlm:
        raise ValueError(f"family {fam.name} is text-only: it has a tokenizer, no processor")
    if fam.processor_loader is None:
        return AutoProcessor.from_pretrained(location, **kwargs)
    loader = globals().get(fam.processor_loader)
    if not callable(loader):
        raise ValueError(
            f"family {fam.name}: processor_loader {fam.processor_loader!r} is not a function of {__name__}"
        )
    return loader(location, **kwargs)
