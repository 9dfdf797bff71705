"""Tiny random-weight SmolLM2 LLM (``LlamaForCausalLM``) and SmolVLM built on it, for offline tests and demos.

The hub SmolVLM (v1) checkpoints, e.g. ``HuggingFaceTB/SmolVLM-256M-Instruct``, are ``model_type: idefics3``
(``Idefics3ForConditionalGeneration`` + ``Idefics3Processor``), so the demo uses those classes. The newer
``SmolVLMProcessor`` (SmolVLM2) cannot be built here: its ``__init__`` requires the ``num2words`` package and a
video processor (which needs torchvision); neither is installed.

* :func:`build_demo_smollm2_tokenizer`: a byte-level BPE ``GPT2Tokenizer`` (SmolLM2's class) with SmolLM2's first
  special ids (``<|endoftext|>`` 0, ``<|im_start|>`` 1 = BOS, ``<|im_end|>`` 2 = EOS/pad); like SmolLM2's it adds
  no BOS when encoding.
* :func:`build_demo_smolvlm`: the VLM's parts. The processor expands each ``<image>`` into
  ``<fake_token_around_image><row_i_col_j><image>*n ... <global-img><image>*n<fake_token_around_image>`` for the
  tiles of a split image plus a global view, so the image-token count depends on the image's size; the image
  tokens are found by ``config.image_token_id``.
"""

from __future__ import annotations

import os
from pathlib import Path

from repshift.demo.models import DEMO_CORPUS, VlmParts, build_tiny_llm

SMOL_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
#: Tokens SmolVLM's vocabulary adds to SmolLM2's (Idefics3Processor adds the first three itself).
SMOLVLM_IMAGE_TOKENS = (
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *(f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)),
)


def build_demo_smollm2_tokenizer(*, vocab_size: int = 512):
    """A deterministic byte-level BPE tokenizer of ``vocab_size`` tokens with SmolLM2's special tokens."""
    from transformers import GPT2Tokenizer

    seed = GPT2Tokenizer(
        vocab={"<|endoftext|>": 0},
        merges=[],
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    return seed.train_new_from_iterator(
        DEMO_CORPUS, vocab_size=vocab_size, new_special_tokens=list(SMOL_SPECIAL_TOKENS)
    )


def build_demo_smollm2(out_dir: str | os.PathLike, *, seed: int = 0, vocab_size: int = 512, **sizes) -> Path:
    """Build a tiny random ``LlamaForCausalLM`` shaped like SmolLM2 (tied embeddings; sizes:
    :data:`TINY_LLM_SIZES`) and its tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_demo_smollm2_tokenizer(vocab_size=vocab_size)
    return build_tiny_llm(
        out_dir, LlamaForCausalLM, LlamaConfig, tokenizer, arch="smollm2", seed=seed, sizes=sizes,
        rms_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip


def build_demo_smolvlm(
    base_dir: Path, *, image_size: int, patch_size: int, vision_layers: int, vision_hidden_size: int
) -> VlmParts:
    """``Idefics3ForConditionalGeneration`` parts: SigLIP-style tower, pixel-shuffle connector (scale 2), the LLM's
    tokenizer plus :data:`SMOLVLM_IMAGE_TOKENS` (new embedding rows), images split into ``image_size`` tiles
    (longest edge resized to ``2 * image_size``) of ``(image_size / patch_size / 2) ** 2`` tokens each."""
    from transformers import (
        AutoTokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        LlamaConfig,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    scale = 2
    if image_size % (patch_size * scale):
        raise ValueError(
            f"smolvlm: image_size={image_size} must be a multiple of 2 x patch_size={patch_size}"
        )
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SMOLVLM_IMAGE_TOKENS)})
    text = LlamaConfig.from_pretrained(base_dir).to_dict()
    text["vocab_size"] = len(tokenizer)
    n_image_tokens = (image_size // patch_size // scale) ** 2
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 2 * image_size}, max_image_size={"longest_edge": image_size}
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=n_image_tokens
    )
    config = Idefics3Config(
        text_config=text,
        vision_config=dict(
            hidden_size=vision_hidden_size,
            intermediate_size=2 * vision_hidden_size,
            num_hidden_layers=vision_layers,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    return VlmParts(Idefics3ForConditionalGeneration, config, processor, n_image_tokens)
