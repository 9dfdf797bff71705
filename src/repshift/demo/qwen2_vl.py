"""Tiny random-weight Qwen2 LLM and Qwen2-VL built on it, for offline tests and demo configs.

* :func:`build_demo_qwen2_tokenizer`: a byte-level BPE ``Qwen2Tokenizer`` trained on the demo corpus with Qwen2's
  pre-tokenizer; like the hub Qwen2 tokenizer it has **no BOS token**, and its special tokens include the vision
  markers ``<|vision_start|>``, ``<|vision_end|>``, ``<|image_pad|>``, ``<|video_pad|>`` (the hub Qwen2 vocabulary
  has them too, which is why Qwen2-VL shares Qwen2's vocabulary).
* :func:`build_demo_qwen2`: ``Qwen2ForCausalLM`` (q/k/v biases, RMSNorm scales 1 + seeded noise).
* :func:`build_demo_qwen2_vl`: the parts of a ``Qwen2VLForConditionalGeneration`` (the generic
  :func:`repshift.demo.models.build_demo_vlm` copies the decoder into it). Multimodal rotary positions: the model
  computes 3-axis positions from ``image_grid_thw`` (which the processor returns and extraction passes on); for text
  the three axes are equal, which reduces M-RoPE to Qwen2's 1-D RoPE, so text-only hidden states of the copied
  decoder equal the LLM's.
"""

from __future__ import annotations

import os
from pathlib import Path

from repshift.demo.models import DEMO_CORPUS, VlmParts, build_tiny_llm

#: Special tokens of the demo Qwen2 tokenizer, at ids 0.. (a subset of the hub Qwen2 added tokens).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN_IMAGE_TOKEN = "<|image_pad|>"


def build_demo_qwen2_tokenizer(*, vocab_size: int = 512):
    """A deterministic byte-level BPE ``Qwen2Tokenizer`` of ``vocab_size`` tokens (no BOS, pads with
    ``<|endoftext|>``); ``save_pretrained`` + ``AutoTokenizer.from_pretrained`` give the same ids."""
    from transformers import Qwen2Tokenizer

    seed = Qwen2Tokenizer(vocab={"<|endoftext|>": 0}, merges=[])
    return seed.train_new_from_iterator(
        DEMO_CORPUS, vocab_size=vocab_size, new_special_tokens=list(QWEN_SPECIAL_TOKENS)
    )


def build_demo_qwen2(out_dir: str | os.PathLike, *, seed: int = 0, vocab_size: int = 512, **sizes) -> Path:
    """Build a tiny random ``Qwen2ForCausalLM`` (head_dim = hidden_size / heads; sizes: :data:`TINY_LLM_SIZES`)
    and its tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_demo_qwen2_tokenizer(vocab_size=vocab_size)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return build_tiny_llm(
        out_dir, Qwen2ForCausalLM, Qwen2Config, tokenizer, arch="qwen2", seed=seed, sizes=sizes,
        bos_token_id=None, eos_token_id=eos,
    )  # fmt: skip


def build_demo_qwen2_vl(
    base_dir: Path, *, image_size: int, patch_size: int, vision_layers: int, vision_hidden_size: int
) -> VlmParts:
    """``Qwen2VLForConditionalGeneration`` parts: a Qwen2-VL vision transformer (``model.visual.blocks``, patches
    merged 2x2 into one token each), a :class:`repshift.models.processors.Qwen2VLImageTextProcessor` (no video
    processor, so no torchvision) with the base LLM's tokenizer (same vocabulary) and a PIL image processor with a
    pixel budget of ``image_size ** 2``: like the hub one it keeps the aspect ratio (``smart_resize`` to multiples
    of ``2 * patch_size``), so a square image gives ``(image_size / patch_size / 2) ** 2`` ``<|image_pad|>`` tokens
    between ``<|vision_start|>`` and ``<|vision_end|>`` and others fewer (a 40x50 image: 16x32 pixels, 2)."""
    from transformers import (
        AutoTokenizer,
        Qwen2Config,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from repshift.models.processors import Qwen2VLImageTextProcessor

    merge = 2
    if image_size % (patch_size * merge):
        raise ValueError(
            f"qwen2-vl: image_size={image_size} must be a multiple of 2 x patch_size={patch_size}"
        )
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = Qwen2Config.from_pretrained(base_dir)
    head_dim = base.hidden_size // base.num_attention_heads
    half = head_dim // 2  # M-RoPE: temporal, height, width sections of the rotary frequencies
    text = base.to_dict()
    text["rope_parameters"] = {
        **(text.get("rope_parameters") or {"rope_type": "default", "rope_theta": 10000.0}),
        "mrope_section": [half - 2 * (half // 3), half // 3, half // 3],
    }
    pixels = image_size * image_size
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": pixels, "longest_edge": pixels},
        patch_size=patch_size,
        merge_size=merge,
        temporal_patch_size=2,
    )
    processor = Qwen2VLImageTextProcessor(image_processor, tokenizer)
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=dict(
            depth=vision_layers,
            embed_dim=vision_hidden_size,
            hidden_size=base.hidden_size,
            num_heads=2,
            mlp_ratio=2,
            patch_size=patch_size,
            spatial_merge_size=merge,
            temporal_patch_size=2,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids(QWEN_IMAGE_TOKEN),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    n_image_tokens = (image_size // patch_size // merge) ** 2
    return VlmParts(Qwen2VLForConditionalGeneration, config, processor, n_image_tokens)
