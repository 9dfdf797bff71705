"""Identical token ids across families, checked on tokenizers before any model loads."""

import pytest

from repshift.demo.models import build_demo_tokenizer
from repshift.models.tokens import TextTokenizer, check_same_token_ids, load_tokenizer, text_token_ids

TEXTS = ["a photo of a cat", "Le chat est sur la table.", "two dogs and a person"]


def test_base_llm_and_vlm_decoders_get_identical_ids(model_specs, demo_model_dirs):
    toks = {k: load_tokenizer(model_specs[k], str(demo_model_dirs[k])) for k in ("llm", "paligemma", "llava")}
    assert check_same_token_ids(TEXTS, toks, max_tokens=64) == len(TEXTS)
    assert all(t.bos for t in toks.values())  # causal-lm: the demo Gemma tokenizer adds BOS itself
    ids, truncated = toks["paligemma"].ids(TEXTS[0], 64)
    assert ids[0] == toks["llm"].tokenizer.bos_token_id and not truncated
    full = toks["llm"].ids(TEXTS[1], 64)[0]
    assert toks["llm"].ids(TEXTS[1], 3) == (full[:3], True)
    assert text_token_ids(toks["llm"].tokenizer, TEXTS[1], 64, bos=False) == (full[1:], False)


def test_different_vocabularies_are_refused_naming_the_text():
    toks = {
        "a": TextTokenizer(build_demo_tokenizer(vocab_size=512), bos=True),
        "b": TextTokenizer(build_demo_tokenizer(vocab_size=300), bos=True),
    }
    with pytest.raises(ValueError, match=r"tokenizes differently for a .* and b"):
        check_same_token_ids(TEXTS, toks, max_tokens=64)


def test_bos_required_but_missing_names_the_family_key():
    from repshift.demo.qwen2_vl import build_demo_qwen2_tokenizer

    with pytest.raises(ValueError, match=r"has no BOS token .* models.<name>.family"):
        TextTokenizer.for_family(build_demo_qwen2_tokenizer(vocab_size=400), "paligemma").ids("a cat", 8)
