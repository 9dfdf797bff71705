"""Text-only token ids, identical across model families, and the check that two models see the same ids.

Every text-only input is ``[<bos>] + tokenizer(text, add_special_tokens=False)`` truncated to ``max_tokens``,
the BOS present or not by the family's rule (:mod:`repshift.models.families`): the hub Gemma tokenizer adds only
BOS and PaliGemma's none (its processor inserts BOS after the image), so Gemma-based VLM families always prepend
it; Qwen2 has no BOS token and SmolLM2's tokenizer adds none, so Qwen2-VL and SmolVLM never do; a causal LM
gets BOS exactly when its tokenizer adds it by itself. Each rule gives a base LLM and its VLM decoder the very
same ids. A comparison between two models on text is
only meaningful when they do: :func:`check_same_token_ids` runs on tokenizers alone, before any model loads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from repshift.config import HUB_HELP, ModelSpec
from repshift.models.families import family


def text_token_ids(tokenizer: Any, text: str, max_tokens: int, *, bos: bool = True) -> tuple[list[int], bool]:
    """Token ids of a text-only input (``[<bos>]`` when ``bos``, then the text) and whether it was truncated."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if bos:
        if tokenizer.bos_token_id is None:
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} has no BOS token but this model family prepends one: check "
                "models.<name>.family (Qwen2 and SmolLM2 models are read without BOS)"
            )
        ids = [tokenizer.bos_token_id, *ids]
    return ids[:max_tokens], len(ids) > max_tokens


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer prepends its BOS by itself (hub Gemma: yes; Qwen2, SmolLM2: no)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


@dataclass(frozen=True)
class TextTokenizer:
    """A tokenizer with its family's BOS rule (:data:`repshift.models.families.BOS_RULES`) applied."""

    tokenizer: Any
    bos: bool

    @classmethod
    def for_family(cls, tokenizer: Any, family_name: str) -> TextTokenizer:
        rule = family(family_name).bos
        bos = rule == "always" or (rule == "tokenizer" and adds_bos(tokenizer))
        return cls(tokenizer, bos)

    def ids(self, text: str, max_tokens: int) -> tuple[list[int], bool]:
        return text_token_ids(self.tokenizer, text, max_tokens, bos=self.bos)


def load_tokenizer(spec: ModelSpec, location: str) -> TextTokenizer:
    """The tokenizer a model's text-only inputs go through (a VLM's processor's tokenizer), with its BOS rule."""
    from transformers import AutoTokenizer

    from repshift.models.processors import load_processor

    kwargs = {"revision": spec.revision} if spec.source == "hub" else {}
    try:
        if spec.is_vlm:  # the family's processor loader: AutoProcessor cannot load every family here
            tokenizer = load_processor(family(spec.family), location, **kwargs).tokenizer
        else:
            tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    except OSError as err:
        raise RuntimeError(
            f"could not load the tokenizer of {spec.name} from {location!r}: {err}\n{HUB_HELP}"
        ) from err
    return TextTokenizer.for_family(tokenizer, spec.family)


def check_same_token_ids(
    texts: Sequence[str], tokenizers: Mapping[str, TextTokenizer], *, max_tokens: int
) -> int:
    """Raise a ValueError naming the first text whose ids differ between the given tokenizers; return the
    number of texts checked."""
    names = list(tokenizers)
    for i, text in enumerate(texts):
        ids = {n: tokenizers[n].ids(text, max_tokens)[0] for n in names}
        ref = ids[names[0]]
        for n in names[1:]:
            if ids[n] != ref:
                raise ValueError(
                    f"text {i} ({text[:60]!r}) tokenizes differently for {names[0]} ({ref[:10]}...) and {n} "
                    f"({ids[n][:10]}...): a text-only comparison needs identical token ids (same vocabulary, same "
                    "BOS). Compare models that share a tokenizer, or drop this comparison."
                )
    return len(texts)
