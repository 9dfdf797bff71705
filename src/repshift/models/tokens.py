"""Text-only token ids, identical across model families, and the check that two models see the same ids.

Every text-only input is ``[<bos>] + tokenizer(text, add_special_tokens=False)`` truncated to ``max_tokens``:
the hub Gemma tokenizer adds only BOS, PaliGemma's adds none (its processor inserts BOS after the image), so
this one rule gives a base LLM and its VLM decoder the very same ids. A comparison between two models on text is
only meaningful when they do: :func:`check_same_token_ids` runs on tokenizers alone, before any model loads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from repshift.config import HUB_HELP, ModelSpec


def text_token_ids(tokenizer: Any, text: str, max_tokens: int) -> tuple[list[int], bool]:
    """Token ids of a text-only input and whether it was truncated."""
    if tokenizer.bos_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no BOS token")
    ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[:max_tokens], len(ids) > max_tokens


def load_tokenizer(spec: ModelSpec, location: str) -> Any:
    """The tokenizer a model's text-only inputs go through (a VLM's processor's tokenizer)."""
    from transformers import AutoProcessor, AutoTokenizer

    kwargs = {"revision": spec.revision} if spec.source == "hub" else {}
    try:
        if spec.is_vlm:
            return AutoProcessor.from_pretrained(location, **kwargs).tokenizer
        return AutoTokenizer.from_pretrained(location, **kwargs)
    except OSError as err:
        raise RuntimeError(
            f"could not load the tokenizer of {spec.name} from {location!r}: {err}\n{HUB_HELP}"
        ) from err


def check_same_token_ids(texts: Sequence[str], tokenizers: Mapping[str, Any], *, max_tokens: int) -> int:
    """Raise a ValueError naming the first text whose ids differ between the given tokenizers; return the
    number of texts checked."""
    names = list(tokenizers)
    for i, text in enumerate(texts):
        ids = {n: text_token_ids(tokenizers[n], text, max_tokens)[0] for n in names}
        ref = ids[names[0]]
        for n in names[1:]:
            if ids[n] != ref:
                raise ValueError(
                    f"text {i} ({text[:60]!r}) tokenizes differently for {names[0]} ({ref[:10]}...) and {n} "
                    f"({ids[n][:10]}...): a text-only comparison needs identical token ids (same vocabulary, same "
                    "BOS). Compare models that share a tokenizer, or drop this comparison."
                )
    return len(texts)
