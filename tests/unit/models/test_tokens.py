"""Identical token ids across families, checked on tokenizers before any model loads."""

import pytest

from repshift.demo.models import build_demo_tokenizer
from repshift.models.tokens import check_same_token_ids, load_tokenizer, text_token_ids

TEXTS = ["a photo of a cat", "Le chat est sur la table.", "two dogs and a person"]


def test_base_llm_and_vlm_decoders_get_identical_ids(model_specs, demo_model_dirs):
    toks = {k: load_tokenizer(model_specs[k], str(demo_model_dirs[k])) for k in ("llm", "paligemma", "llava")}
    assert check_same_token_ids(TEXTS, toks, max_tokens=64) == len(TEXTS)
    ids, truncated = text_token_ids(toks["paligemma"], TEXTS[0], 64)
    assert ids[0] == toks["llm"].bos_token_id and not truncated
    full = text_token_ids(toks["llm"], TEXTS[1], 64)[0]
    assert text_token_ids(toks["llm"], TEXTS[1], 3) == (full[:3], True)


def test_different_vocabularies_are_refused_naming_the_text():
    toks = {"a": build_demo_tokenizer(vocab_size=512), "b": build_demo_tokenizer(vocab_size=300)}
    with pytest.raises(ValueError, match=r"tokenizes differently for a .* and b"):
        check_same_token_ids(TEXTS, toks, max_tokens=64)
