"""Model families: one frozen row each, holding everything that differs between them.

The adapter, the config checks, :data:`repshift.config.VLM_FAMILIES`, the schema's ``family`` enum (pinned by a
test) and the demo preset all read :data:`FAMILIES`. Adding a family means one row here, a demo builder and its
tests. This module imports neither torch nor transformers (the Snakefile's config checks read it); demo builders
are named as ``"module:function"`` and imported only when called; processor loaders (for VLMs whose
``AutoProcessor`` cannot load here, e.g. Qwen2-VL without torchvision) are functions of
:mod:`repshift.models.processors`, named by the row.

Attribute paths were read off the transformers 5.23 classes (and are pinned by the unit tests):

==============  ===========================================  ======================================================
family          decoder blocks                               vision blocks
==============  ===========================================  ======================================================
causal-lm       ``model.layers`` (any ``*ForCausalLM``)      --
paligemma       ``model.language_model.layers``              ``model.vision_tower.encoder.layers``
llava(-next)    ``model.language_model.layers``              ``model.vision_tower.encoder.layers``
qwen2-vl        ``model.language_model.layers``              ``model.visual.blocks``
smolvlm         ``model.text_model.layers``                  ``model.vision_model.encoder.layers``
==============  ===========================================  ======================================================
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: BOS rules for text-only inputs (see :func:`repshift.models.tokens.text_token_ids`).
#: ``always``: prepend the tokenizer's BOS (an error if it has none); ``never``: no BOS;
#: ``tokenizer``: prepend it exactly when the tokenizer adds it by itself (Gemma yes; Qwen2 and SmolLM2 no).
BOS_RULES = ("always", "never", "tokenizer")


@dataclass(frozen=True)
class Family:
    """What differs between model families. Attribute paths start at the loaded ``*For...`` model."""

    name: str
    vlm: bool
    #: transformers Auto class that loads it (hub id, local folder and demo folder alike)
    auto_class: str
    #: the transformers classes this family covers (documentation; checked by the unit tests)
    model_classes: tuple[str, ...]
    #: dotted path of the decoder blocks (block L produces ``hidden_states[L + 1]``)
    decoder_blocks: str
    #: dotted path of the vision-tower blocks (None: text-only)
    vision_blocks: str | None = None
    #: whether ``stream: vision`` is supported (a fixed number of patch positions per image)
    vision_stream: bool = False
    #: the vision tower prepends a class token at position 0 (CLIP)
    vision_class_token: bool = False
    #: image prompt when the configured prompt holds no image token: ``{image}`` and ``{prompt}`` are filled in
    prompt_format: str = "{image}\n{prompt}"
    #: one of :data:`BOS_RULES`
    bos: str = "always"
    #: config attributes holding the image token id, first found wins (never found by offsets)
    image_token_keys: tuple[str, ...] = ("image_token_id", "image_token_index")
    #: tensors the processor must return with image inputs besides input_ids/attention_mask/pixel_values
    image_inputs: tuple[str, ...] = ()
    #: demo architecture of the LLM whose decoder the demo VLM copies (a :data:`DEMO_LLMS` key)
    demo_base: str | None = None
    #: ``"module:function"`` building the demo model: ``(out_dir, *, base_dir, perturb_from, ...)`` for VLMs
    demo_builder: str | None = None
    #: name of a function in :mod:`repshift.models.processors` loading the processor
    #: ``(location, **from_pretrained_kwargs)`` of a VLM whose ``AutoProcessor`` cannot load here (None:
    #: ``AutoProcessor``); one module, imported by name where models load, so the code hashes see it
    processor_loader: str | None = None

    def __post_init__(self) -> None:
        if self.bos not in BOS_RULES:
            raise ValueError(f"family {self.name}: bos {self.bos!r} is not one of {BOS_RULES}")
        if self.vision_stream and not self.vision_blocks:
            raise ValueError(f"family {self.name}: vision_stream needs vision_blocks")
        if self.processor_loader is not None and not self.vlm:
            raise ValueError(f"family {self.name}: a processor_loader needs vlm=True")

    def image_text(self, image_token: str, prompt: str) -> str:
        """The text given to the processor with one image (unchanged when it already holds the token)."""
        if image_token in prompt:
            return prompt
        return self.prompt_format.format(image=image_token, prompt=prompt)

    def demo(self) -> Callable[..., Any]:
        """The demo builder (imported on first use)."""
        if self.demo_builder is None:
            raise ValueError(f"family {self.name} has no demo builder; demo LLMs: {', '.join(DEMO_LLMS)}")
        return _resolve(self.demo_builder)


def _resolve(target: str) -> Callable[..., Any]:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def resolve_path(root: Any, path: str) -> Any:
    """Follow a dotted attribute path (``model.language_model.layers``) from ``root``; None if any step is missing."""
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


_GEMMA_VLM = dict(vlm=True, auto_class="AutoModelForImageTextToText", demo_base="gemma2", bos="always")

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="causal-lm",
            vlm=False,
            auto_class="AutoModelForCausalLM",
            model_classes=(
                "Gemma2ForCausalLM",
                "GemmaForCausalLM",
                "MistralForCausalLM",
                "Qwen2ForCausalLM",
                "LlamaForCausalLM",
            ),  # fmt: skip
            decoder_blocks="model.layers",
            bos="tokenizer",
        ),
        Family(
            name="paligemma",
            model_classes=("PaliGemmaForConditionalGeneration",),
            decoder_blocks="model.language_model.layers",
            vision_blocks="model.vision_tower.encoder.layers",
            vision_stream=True,
            # the processor builds <image>xN <bos> prompt \n itself
            prompt_format="{image}{prompt}",
            image_inputs=("token_type_ids",),  # bidirectional image+prompt prefix
            demo_builder="repshift.demo.models:build_demo_paligemma",
            **_GEMMA_VLM,
        ),
        Family(
            name="llava",
            model_classes=("LlavaForConditionalGeneration",),
            decoder_blocks="model.language_model.layers",
            vision_blocks="model.vision_tower.encoder.layers",
            vision_stream=True,
            vision_class_token=True,
            prompt_format="{image}\n{prompt}",  # <bos> <image>xN \n prompt
            demo_builder="repshift.demo.models:build_demo_llava",
            **_GEMMA_VLM,
        ),
        Family(
            name="llava-next",
            model_classes=("LlavaNextForConditionalGeneration",),
            decoder_blocks="model.language_model.layers",
            vision_blocks="model.vision_tower.encoder.layers",
            vision_class_token=True,  # tower supported only as decoder: AnyRes tiles vary per image
            prompt_format="{image}\n{prompt}",
            image_inputs=("image_sizes",),
            demo_builder="repshift.demo.models:build_demo_llava_next",
            **_GEMMA_VLM,
        ),
        Family(
            name="qwen2-vl",
            vlm=True,
            auto_class="AutoModelForImageTextToText",
            model_classes=("Qwen2VLForConditionalGeneration",),
            decoder_blocks="model.language_model.layers",
            vision_blocks="model.visual.blocks",  # patches merged 2x2 after the tower: no vision stream
            prompt_format="<|vision_start|>{image}<|vision_end|>{prompt}",
            bos="never",  # Qwen2 has no BOS token
            image_inputs=("image_grid_thw",),  # multimodal rotary positions are computed from it
            demo_base="qwen2",
            demo_builder="repshift.demo.qwen2_vl:build_demo_qwen2_vl",
            # AutoProcessor wants a video processor, i.e. torchvision: load image processor + tokenizer alone
            processor_loader="load_qwen2_vl_processor",
        ),
        Family(
            name="smolvlm",
            vlm=True,
            auto_class="AutoModelForImageTextToText",
            # the hub SmolVLM (v1) checkpoints are model_type idefics3; SmolVLM2 ones are smolvlm
            model_classes=("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration"),
            decoder_blocks="model.text_model.layers",
            vision_blocks="model.vision_model.encoder.layers",  # images split into tiles: no vision stream
            prompt_format="{image}{prompt}",
            bos="never",  # SmolLM2's tokenizer adds no BOS; <|im_start|> opens chat turns only
            image_inputs=("pixel_attention_mask",),
            demo_base="smollm2",
            demo_builder="repshift.demo.smolvlm:build_demo_smolvlm",
        ),
    )
}

#: Demo LLM architectures (all family causal-lm): arch -> builder ``(out_dir, *, seed, num_hidden_layers, ...)``.
DEMO_LLMS: dict[str, str] = {
    "gemma2": "repshift.demo.models:build_demo_llm",
    "qwen2": "repshift.demo.qwen2_vl:build_demo_qwen2",
    "smollm2": "repshift.demo.smolvlm:build_demo_smollm2",
}

VLM_FAMILIES = frozenset(name for name, f in FAMILIES.items() if f.vlm)


def family(name: str) -> Family:
    """The row of a family, or a ValueError listing the known ones."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}: choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def demo_archs() -> dict[str, str]:
    """Every demo architecture and the family it belongs to (LLMs: causal-lm; VLMs: their family name)."""
    out = dict.fromkeys(DEMO_LLMS, "causal-lm")
    out.update({name: name for name, f in FAMILIES.items() if f.demo_builder and f.vlm})
    return out


def build_demo_llm(arch: str, out_dir: Any, **kwargs: Any) -> Any:
    """Build the demo LLM of architecture ``arch`` (a :data:`DEMO_LLMS` key)."""
    if arch not in DEMO_LLMS:
        raise ValueError(f"unknown demo LLM arch {arch!r}: choose one of {', '.join(DEMO_LLMS)}")
    return _resolve(DEMO_LLMS[arch])(out_dir, **kwargs)
