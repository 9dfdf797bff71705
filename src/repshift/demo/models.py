"""Tiny random-weight models of the real architectures, for the offline CPU demo preset.

The demo builds, deterministically and without the hub:

* a Gemma-2 causal LM (``Gemma2ForCausalLM``, softcapping, alternating sliding/global attention) with a
  Gemma-style tokenizer (BPE with byte fallback, Gemma's special ids) trained on :data:`DEMO_CORPUS`;
* a vision-language model whose decoder is a *copy* of that LLM, either PaliGemma
  (``PaliGemmaForConditionalGeneration``: SigLIP tower + linear projector) or LLaVA
  (``LlavaForConditionalGeneration``: CLIP tower + 2-layer MLP projector), with only the decoder blocks at
  index ``>= perturb_from`` perturbed by seeded Gaussian noise.

So the ground truth of the demo is known: for identical text token ids, ``hidden_states[L + 1]`` (the output
of block ``L``) of the LLM and of the VLM's decoder agree for ``L < perturb_from`` and differ from there on.

Everything is saved with ``save_pretrained`` and loads back through the same calls as hub ids:
``AutoTokenizer`` / ``AutoModelForCausalLM`` for the LLM, ``AutoProcessor`` / ``AutoModelForImageTextToText``
for both VLMs (in transformers 5.23 that Auto class maps ``paligemma`` and ``llava`` to the classes above).

Facts about transformers 5.23 that this module relies on (checked in its source, pinned by the unit tests):

* ``GemmaTokenizerFast`` is an alias of ``GemmaTokenizer`` (the tokenizers-backed class). On
  ``from_pretrained`` it *rebuilds* its pipeline (``"▁"`` for spaces, BPE with byte fallback) from the vocab
  and merges in ``tokenizer.json``; a tokenizer saved with a different pipeline (e.g. byte-level BPE) would
  silently change on reload. The demo tokenizer therefore uses Gemma's own pipeline, and byte fallback
  (``<0x00>`` ... ``<0xFF>``) makes any UTF-8 text tokenizable without ``<unk>``.
* ``PaliGemmaProcessor.__init__`` always adds 1024 ``<locNNNN>`` and 128 ``<segNNN>`` tokens to the
  tokenizer (they are part of the hub PaliGemma vocab, which is why it is larger than Gemma's). The demo
  PaliGemma's embedding is the LLM's embedding with those rows appended (seeded random init); all ids the
  LLM tokenizer can produce keep their embedding.
* PaliGemma numbers positions from 1 (``position_ids = arange(T) + 1``), Gemma2 from 0. RoPE only sees
  position differences, so text-only hidden states agree up to float rounding (well below 1e-5 here).
* ``PaliGemmaConfig`` sets ``text_config.use_bidirectional_attention = True`` when unset (as on the hub).
  In 5.23 this only sets ``is_causal=False`` on the attention modules, which eager attention ignores (the
  mask from ``create_causal_mask`` stays causal, plus a bidirectional block over ``token_type_ids == 0`` when
  token_type_ids are passed). Kernels that read ``module.is_causal`` (flash/sdpa) may attend
  bidirectionally on text-only input: use eager attention when comparing decoders.
* Text-only input (``input_ids`` + ``attention_mask``, no ``pixel_values``) runs both VLMs' decoders exactly
  like ``Gemma2Model``: no image features are scattered and, without ``token_type_ids``, PaliGemma's mask is
  the plain causal (and sliding-window) mask.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from repshift.formats.atomic import atomic_dir
from repshift.models.adapter import decoder_layers
from repshift.models.families import FAMILIES, resolve_path

if TYPE_CHECKING:
    from transformers import GemmaTokenizer

logger = logging.getLogger(__name__)

#: The special tokens of the demo tokenizer, at ids 0.. in this order (Gemma's ids for the first four).
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<image>")
IMAGE_TOKEN = "<image>"
#: Byte-fallback tokens, right after the special tokens (as in SentencePiece/Gemma vocabularies).
BYTE_TOKENS: tuple[str, ...] = tuple(f"<0x{b:02X}>" for b in range(256))
#: VLM architectures :func:`build_demo_vlm` can build: the VLM families with a demo builder, in table order
#: (the order seeds each family's perturbation, so rows are only ever appended).
VLM_ARCHS: tuple[str, ...] = tuple(n for n, f in FAMILIES.items() if f.vlm and f.demo_builder)
#: Name of the JSON file recording how a demo model directory was built.
DEMO_META_FILE = "repshift_demo.json"

_WORDS = (
    "a an the of on in with and is are this that there here photo picture image close up view "
    "cat cats dog dogs person people man woman child car cars bus truck bike pizza chair chairs table sofa "
    "bed bird horse cake cup bottle red blue green yellow black white orange purple brown gray "
    "striped dotted plain circle circles square squares triangle triangles shape shapes small large big "
    "bright dark street kitchen room grass field sky water sitting standing lying eating playing parked "
    "next to near under over top front behind"
)

#: Built-in English text that the demo tokenizer is trained on (caption-like sentences plus a word list).
DEMO_CORPUS: tuple[str, ...] = (
    "A photo of a cat sitting on a chair.",
    "A dog is playing with a red ball on the grass.",
    "A person is eating a slice of pizza in the kitchen.",
    "A blue car is parked on the street next to a bus.",
    "A picture of a striped triangle and a dotted circle on a yellow square.",
    "A close up photo of a green chair in a bright room.",
    "Two cats are lying on the bed near the window.",
    "A man and a woman are standing in front of a white truck.",
    "A child with a dog in a large green field under a blue sky.",
    "An image of a red circle, a blue square and a green triangle.",
    "A striped cat on a dotted sofa.",
    "A pizza with cheese on a table with a cup and a bottle.",
    "The person is sitting on a chair with a cat.",
    "A yellow bus on the street in front of people.",
    "This is a picture of a small dog and a large horse.",
    "There is a bird on top of the car.",
    "A dark photo of a black dog behind a chair.",
    "An orange cake on a white plate next to a purple cup.",
    "A brown horse is standing in the water.",
    "A gray image with a striped square and a dotted triangle.",
    _WORDS,
)


def build_demo_tokenizer(*, vocab_size: int = 512) -> GemmaTokenizer:
    """Train a deterministic Gemma-style tokenizer of exactly ``vocab_size`` tokens on :data:`DEMO_CORPUS`.

    Layout of the vocabulary: :data:`SPECIAL_TOKENS` at ids 0-5 (``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2,
    ``<unk>`` 3, ``<mask>`` 4, ``<image>`` 5), the 256 byte-fallback tokens, the learned BPE pieces, then
    ``<unusedN>`` fillers (Gemma has those too) up to ``vocab_size``. Spaces become ``"▁"`` (no dummy prefix),
    so ``decode(encode(text))`` returns ``text``. BOS is prepended, padding is on the left, like the hub
    Gemma-2 tokenizer; ``<image>`` is an added special token exposed as ``tokenizer.image_token(_id)``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import GemmaTokenizer

    n_fixed = len(SPECIAL_TOKENS) + len(BYTE_TOKENS)
    alphabet = sorted({ch.replace(" ", "▁") for text in DEMO_CORPUS for ch in text})
    min_size = n_fixed + len(alphabet)
    if vocab_size < min_size:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for the demo tokenizer: it needs at least {min_size} "
            f"({len(SPECIAL_TOKENS)} special + {len(BYTE_TOKENS)} byte + {len(alphabet)} character tokens)"
        )

    # Train on words (split before each "▁"), so that no learned piece spans two words; the final
    # tokenizer below applies the same merges to whole strings, as Gemma's does.
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    trainer_tok.normalizer = normalizers.Replace(" ", "▁")
    trainer_tok.pre_tokenizer = pre_tokenizers.Split(pattern="▁", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - n_fixed, special_tokens=[], show_progress=False, initial_alphabet=alphabet
    )
    trainer_tok.train_from_iterator(DEMO_CORPUS, trainer=trainer)
    model_json = json.loads(trainer_tok.to_str())["model"]

    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + BYTE_TOKENS)}
    for piece, _ in sorted(model_json["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    n_unused = 0
    while len(vocab) < vocab_size:
        vocab[f"<unused{n_unused}>"] = len(vocab)
        n_unused += 1
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]
    logger.info(
        "demo tokenizer: %d tokens (%d learned pieces, %d merges, %d unused fillers)",
        len(vocab),
        len(vocab) - n_fixed - n_unused,
        len(merges),
        n_unused,
    )
    tokenizer = GemmaTokenizer(
        vocab=vocab,
        merges=merges,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        add_bos_token=True,
        add_eos_token=False,
        padding_side="left",
    )
    if len(tokenizer) != vocab_size:  # pragma: no cover - guards the layout above
        raise RuntimeError(f"demo tokenizer has {len(tokenizer)} tokens, expected {vocab_size}")
    return tokenizer


def _demo_gemma2_config(
    *,
    vocab_size: int,
    num_hidden_layers: int,
    hidden_size: int,
    intermediate_size: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    head_dim: int,
):
    from transformers import Gemma2Config

    return Gemma2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        max_position_embeddings=1024,
        sliding_window=16,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        pad_token_id=SPECIAL_TOKENS.index("<pad>"),
        eos_token_id=SPECIAL_TOKENS.index("<eos>"),
        bos_token_id=SPECIAL_TOKENS.index("<bos>"),
        tie_word_embeddings=True,
        attn_implementation="eager",
    )


def _generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from integers (collision-free mixing via numpy's SeedSequence)."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device="cpu").manual_seed(int(state[0]) << 32 | int(state[1]))


def _write_meta(out_dir: Path, meta: dict) -> None:
    (out_dir / DEMO_META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def seeded_model(model_cls, config, seed: int, *, norm_offset: float | None = None) -> nn.Module:
    """``model_cls(config)`` under ``torch.manual_seed(seed)`` (global RNG restored); with ``norm_offset``, every
    norm weight becomes ``norm_offset`` + seeded noise of std 0.1 (non-trivial like trained ones)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    if norm_offset is not None:
        gen = _generator(seed, 1)
        with torch.no_grad():
            for name, param in sorted(model.named_parameters()):
                if "norm" in name:
                    param.copy_(norm_offset + torch.randn(param.shape, generator=gen) * 0.1)
    return model.eval()


def save_demo_llm(out_dir: str | os.PathLike, model, tokenizer, *, arch: str, seed: int) -> Path:
    """Write a demo LLM (model, tokenizer, build record) atomically."""
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _write_meta(tmp, {"kind": "llm", "arch": arch, "seed": seed, "vocab_size": len(tokenizer)})
    logger.info(
        "demo LLM: %s, %d blocks, d=%d, vocab %d, seed %d -> %s",
        type(model).__name__,
        model.config.num_hidden_layers,
        model.config.hidden_size,
        len(tokenizer),
        seed,
        out,
    )
    return out


#: Sizes of the tiny demo LLMs of the Qwen2 and SmolLM2 families (each builder takes these as keyword overrides).
TINY_LLM_SIZES = {
    "num_hidden_layers": 6,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def build_tiny_llm(
    out_dir,
    model_cls,
    config_cls,
    tokenizer,
    *,
    arch: str,
    seed: int,
    sizes,
    norm_offset: float = 1.0,
    **config,
) -> Path:
    """A tiny random causal LM of ``model_cls`` (tied embeddings, 1024 positions, RMSNorm scales
    ``norm_offset`` + seeded noise: 1 for norms that multiply by ``weight``, 0 for Gemma's ``1 + weight``) at
    :data:`TINY_LLM_SIZES` overridden by ``sizes``, saved with its tokenizer by :func:`save_demo_llm`;
    ``config`` adds the family's own config keys (token ids, norm epsilon)."""
    unknown = set(sizes) - set(TINY_LLM_SIZES)
    if unknown:
        raise TypeError(f"unknown size argument(s) for the demo {arch}: {sorted(unknown)}")
    cfg = config_cls(
        vocab_size=len(tokenizer),
        **{**TINY_LLM_SIZES, **sizes},
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        **config,
    )
    return save_demo_llm(
        out_dir, seeded_model(model_cls, cfg, seed, norm_offset=norm_offset), tokenizer, arch=arch, seed=seed
    )


def build_demo_llm(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    num_hidden_layers: int = 6,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    head_dim: int = 16,
    vocab_size: int = 512,
) -> Path:
    """Build a tiny random ``Gemma2ForCausalLM`` plus the demo tokenizer and save both to ``out_dir``.

    Weights are drawn with transformers' own initialisation under ``torch.manual_seed(seed)`` (the global RNG
    state is restored afterwards); the RMSNorm scales, which Gemma initialises to zero (the norm multiplies by
    ``1 + weight``), get seeded noise of std 0.1 so that they are non-trivial like trained ones. Same seed,
    same weights, bit for bit. The directory is written atomically.
    """
    from transformers import Gemma2ForCausalLM

    tokenizer = build_demo_tokenizer(vocab_size=vocab_size)
    config = _demo_gemma2_config(
        vocab_size=len(tokenizer),
        num_hidden_layers=num_hidden_layers,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=head_dim,
    )
    model = seeded_model(Gemma2ForCausalLM, config, seed, norm_offset=0.0)
    return save_demo_llm(out_dir, model, tokenizer, arch="gemma2", seed=seed)


#: Demo LLM architectures built with :func:`build_demo_tokenizer` (Gemma's special ids, ``<image>``): any of them
#: can be the decoder of a demo PaliGemma / LLaVA / LLaVA-NeXT.
DEMO_TOKENIZER_LLMS: tuple[str, ...] = ("gemma2", "gemma", "mistral")


def _demo_token_ids() -> dict[str, int]:
    """EOS and BOS of the demo tokenizer (build_tiny_llm sets the pad id from the tokenizer)."""
    return {"eos_token_id": SPECIAL_TOKENS.index("<eos>"), "bos_token_id": SPECIAL_TOKENS.index("<bos>")}


def build_demo_gemma(
    out_dir: str | os.PathLike, *, seed: int = 0, vocab_size: int = 512, head_dim: int = 16, **sizes
) -> Path:
    """A tiny random Gemma-1 ``GemmaForCausalLM`` (the architecture of ``google/gemma-2b``: GeGLU MLP, RMSNorm
    scaling by ``1 + weight``, no softcapping, no sliding window) at :data:`TINY_LLM_SIZES` overridden by
    ``sizes``. The tokenizer is the demo's (:func:`build_demo_tokenizer`), not Gemma's real one."""
    from transformers import GemmaConfig, GemmaForCausalLM

    tokenizer = build_demo_tokenizer(vocab_size=vocab_size)
    ids = _demo_token_ids()
    return build_tiny_llm(
        out_dir, GemmaForCausalLM, GemmaConfig, tokenizer, arch="gemma", seed=seed, sizes=sizes,
        norm_offset=0.0, head_dim=head_dim, rms_norm_eps=1e-6, attn_implementation="eager", **ids,
    )  # fmt: skip


def build_demo_mistral(
    out_dir: str | os.PathLike, *, seed: int = 0, vocab_size: int = 512, head_dim: int = 16, **sizes
) -> Path:
    """A tiny random ``MistralForCausalLM`` (the architecture of ``mistralai/Mistral-7B-Instruct-v0.2``:
    SwiGLU MLP, grouped-query attention, no sliding window as in v0.2) at :data:`TINY_LLM_SIZES` overridden by
    ``sizes``; embeddings tied (the real checkpoint's are not). The tokenizer is the demo's Gemma-style one
    (:func:`build_demo_tokenizer`), not Mistral's real Llama tokenizer."""
    from transformers import MistralConfig, MistralForCausalLM

    tokenizer = build_demo_tokenizer(vocab_size=vocab_size)
    ids = _demo_token_ids()
    return build_tiny_llm(
        out_dir, MistralForCausalLM, MistralConfig, tokenizer, arch="mistral", seed=seed, sizes=sizes,
        head_dim=head_dim, sliding_window=None, rms_norm_eps=1e-5, attn_implementation="eager", **ids,
    )  # fmt: skip


@dataclass(frozen=True)
class VlmParts:
    """What a family's demo builder returns: the VLM class and config, and its processor (not yet saved)."""

    model_cls: type
    config: Any
    processor: Any
    #: image tokens per image (or per tile) at the demo size, for the build record
    n_image_tokens: int


def _vision_config(
    arch: str, *, image_size: int, patch_size: int, vision_layers: int, vision_hidden_size: int
):
    from transformers import CLIPVisionConfig, SiglipVisionConfig

    common = dict(
        hidden_size=vision_hidden_size,
        intermediate_size=2 * vision_hidden_size,
        num_hidden_layers=vision_layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        num_channels=3,
    )
    if arch == "paligemma":
        return SiglipVisionConfig(**common, vision_use_head=False)
    # llava and llava-next: a CLIP tower
    return CLIPVisionConfig(**common, projection_dim=vision_hidden_size)


def _gemma_parts(base_dir: Path, arch: str, *, image_size: int, patch_size: int, **vision):
    """Vision config, the base LLM's tokenizer, a copy of the base LLM's own text config (Gemma-2 for the demo,
    Gemma-1 or Mistral for the rehearsal's stand-ins: any LLM built with the demo tokenizer) and the image id."""
    from transformers import AutoConfig, AutoTokenizer

    base_config = AutoConfig.from_pretrained(base_dir)
    vision_config = _vision_config(arch, image_size=image_size, patch_size=patch_size, **vision)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    text_config = type(base_config).from_dict(base_config.to_dict())
    return vision_config, tokenizer, text_config, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def build_demo_paligemma(base_dir: Path, *, image_size: int, patch_size: int, **vision) -> VlmParts:
    """``PaliGemmaForConditionalGeneration`` (SigLIP tower, linear projector) with a ``PaliGemmaProcessor``
    (``SiglipImageProcessorPil``; the processor itself builds ``"<image>" * N + "<bos>" + prompt + "\\n"``, its
    tokenizer does not add BOS). The vocabulary is the LLM's plus the 1152 ``<loc>``/``<seg>`` tokens the
    processor always adds."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    vision_config, tokenizer, text_config, image_token_id = _gemma_parts(
        base_dir, "paligemma", image_size=image_size, patch_size=patch_size, **vision
    )
    n_image_tokens = (image_size // patch_size) ** 2
    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_seq_length=n_image_tokens
    )
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    text_config.vocab_size = len(processor.tokenizer)  # + <locNNNN>/<segNNN> added by the processor
    config = PaliGemmaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=image_token_id,
        projection_dim=text_config.hidden_size,
        hidden_size=text_config.hidden_size,
        vocab_size=text_config.vocab_size,
    )
    return VlmParts(PaliGemmaForConditionalGeneration, config, processor, n_image_tokens)


def build_demo_llava(base_dir: Path, *, image_size: int, patch_size: int, **vision) -> VlmParts:
    """``LlavaForConditionalGeneration`` (CLIP tower, feature layer -2 without CLS, 2-layer GELU projector) with a
    ``LlavaProcessor``; the tokenizer adds BOS like Intel/llava-gemma-2b, so ``"<image>\\ncaption"`` gives
    ``<bos> <image>*N \\n caption``."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    vision_config, tokenizer, text_config, image_token_id = _gemma_parts(
        base_dir, "llava", image_size=image_size, patch_size=patch_size, **vision
    )
    n_image_tokens = (image_size // patch_size) ** 2
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=image_token_id,
        image_seq_length=n_image_tokens,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
    )
    return VlmParts(LlavaForConditionalGeneration, config, processor, n_image_tokens)


def build_demo_llava_next(base_dir: Path, *, image_size: int, patch_size: int, **vision) -> VlmParts:
    """``LlavaNextForConditionalGeneration``: AnyRes tiles each image on a grid of pinpoints, so the number of
    image tokens varies with the image's size and aspect ratio (found from token ids downstream)."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    vision_config, tokenizer, text_config, image_token_id = _gemma_parts(
        base_dir, "llava-next", image_size=image_size, patch_size=patch_size, **vision
    )
    pinpoints = [[image_size, image_size], [image_size, 2 * image_size], [2 * image_size, image_size]]
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )
    config = LlavaNextConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=image_token_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
    )
    return VlmParts(LlavaNextForConditionalGeneration, config, processor, (image_size // patch_size) ** 2)


def _perturb_blocks(
    layers: nn.ModuleList,
    *,
    perturb_from: int,
    perturb_scale: float,
    seed: int,
    fallback_std: float,
    stream: int = 0,
) -> None:
    """Add seeded noise (std = ``perturb_scale`` x the tensor's std) to every weight of blocks >= perturb_from.

    Each block has its own generator (seeded by ``seed``, the architecture's ``stream`` and the block index), so
    the noise on block ``L`` does not depend on ``perturb_from``, and two demo VLMs of different architectures
    built from one LLM get different decoders.
    """
    with torch.no_grad():
        for idx in range(perturb_from, len(layers)):
            gen = _generator(seed, 2, stream, idx)
            for _, param in sorted(layers[idx].named_parameters()):
                std = float(param.float().std()) if param.numel() > 1 else 0.0
                scale = perturb_scale * (std if std > 0 else fallback_std)
                param.add_(torch.randn(param.shape, generator=gen).to(param.dtype) * scale)


def _copy_decoder(language_model: nn.Module, base_state: dict, seed: int) -> None:
    """Load the LLM's decoder (embedding, blocks, final norm) into the VLM's; embedding rows for tokens the LLM
    does not have get seeded noise of the LLM embedding's scale."""
    vocab_base = base_state["embed_tokens.weight"].shape[0]
    with torch.no_grad():
        embed = language_model.embed_tokens.weight
        if embed.shape[0] > vocab_base:
            extra_std = float(base_state["embed_tokens.weight"].std())
            extra = torch.randn((embed.shape[0] - vocab_base, embed.shape[1]), generator=_generator(seed, 3))
            embed[vocab_base:] = extra * extra_std
        embed[:vocab_base] = base_state.pop("embed_tokens.weight")
    missing, unexpected = language_model.load_state_dict(base_state, strict=False)
    missing = [k for k in missing if k != "embed_tokens.weight"]
    if missing or unexpected:  # pragma: no cover - architecture drift guard
        raise RuntimeError(f"decoder copy mismatch: missing {missing}, unexpected {unexpected}")


def _check_vlm_args(out_dir, base_dir: Path, arch: str, perturb_from, perturb_scale: float, n_layers: int):
    if arch not in VLM_ARCHS:
        raise ValueError(f"unknown demo VLM arch {arch!r}: choose one of {', '.join(VLM_ARCHS)}")
    if Path(out_dir).resolve() == base_dir.resolve():
        raise ValueError(
            f"out_dir must differ from base_dir ({base_dir}): the VLM would replace its base LLM"
        )
    want = FAMILIES[arch].demo_base
    allowed = DEMO_TOKENIZER_LLMS if want in DEMO_TOKENIZER_LLMS else (want,)
    got = load_demo_meta(base_dir).get("arch")
    if got is not None and got not in allowed:
        raise ValueError(
            f"a demo {arch} copies a demo {' or '.join(allowed)} LLM, but {base_dir} holds a demo {got}"
        )
    if (
        isinstance(perturb_from, bool)
        or not isinstance(perturb_from, int)
        or not 0 <= perturb_from <= n_layers
    ):
        raise ValueError(
            f"perturb_from={perturb_from} is out of range: the base LLM in {base_dir} has {n_layers} decoder "
            f"blocks, so perturb_from must be in [0, {n_layers}] (0 perturbs every block, {n_layers} none)"
        )
    if perturb_scale < 0:
        raise ValueError(f"perturb_scale must be >= 0, got {perturb_scale}")


def build_demo_vlm(
    out_dir: str | os.PathLike,
    *,
    base_dir: str | os.PathLike,
    arch: str,
    perturb_from: int,
    perturb_scale: float = 0.5,
    seed: int = 0,
    image_size: int = 32,
    patch_size: int = 8,
    vision_layers: int = 2,
    vision_hidden_size: int = 32,
) -> Path:
    """Build a tiny VLM of family ``arch`` whose decoder is a copy of the demo LLM in ``base_dir``; save model +
    processor.

    The family's demo builder (``FAMILIES[arch].demo()``, e.g. :func:`build_demo_paligemma`) gives the VLM's
    class, config and processor; the vision tower and projector are randomly initialised under
    ``torch.manual_seed(seed)``. The decoder (embedding, every block, final norm) is copied from the LLM; then
    each block with index ``>= perturb_from`` gets Gaussian noise of std ``perturb_scale`` x that tensor's std.
    ``perturb_from = num_layers`` copies the decoder unchanged.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    base_dir = Path(base_dir)
    if image_size % patch_size:
        raise ValueError(f"image_size={image_size} must be a multiple of patch_size={patch_size}")
    base_config = AutoConfig.from_pretrained(base_dir)
    n_layers = base_config.num_hidden_layers
    _check_vlm_args(out_dir, base_dir, arch, perturb_from, perturb_scale, n_layers)
    fam = FAMILIES[arch]

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
    parts = fam.demo()(
        base_dir,
        image_size=image_size,
        patch_size=patch_size,
        vision_layers=vision_layers,
        vision_hidden_size=vision_hidden_size,
    )
    model = seeded_model(parts.model_cls, parts.config, seed)
    _copy_decoder(resolve_path(model, fam.decoder_blocks.rpartition(".")[0]), base.model.state_dict(), seed)
    model.tie_weights()
    _perturb_blocks(
        decoder_layers(model),
        perturb_from=perturb_from,
        perturb_scale=perturb_scale,
        seed=seed,
        fallback_std=base_config.initializer_range,
        stream=VLM_ARCHS.index(arch),
    )
    image_token_id = next(getattr(model.config, k) for k in fam.image_token_keys if hasattr(model.config, k))
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        parts.processor.save_pretrained(tmp)
        meta = dict(kind="vlm", arch=arch, base_dir=str(base_dir), perturb_from=perturb_from, seed=seed)
        meta.update(
            perturb_scale=perturb_scale, num_image_tokens=parts.n_image_tokens, image_token_id=image_token_id
        )
        _write_meta(tmp, meta)
    logger.info(
        "demo VLM: %s, decoder copied from %s, blocks %d..%d perturbed (scale %g), %d image tokens -> %s",
        parts.model_cls.__name__,
        base_dir,
        perturb_from,
        n_layers - 1,
        perturb_scale,
        parts.n_image_tokens,
        out,
    )
    return out


def load_demo_meta(model_dir: str | os.PathLike) -> dict:
    """The build record of a demo model directory (``{}`` for directories not built here)."""
    path = Path(model_dir) / DEMO_META_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
