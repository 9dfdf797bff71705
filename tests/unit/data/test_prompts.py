"""Prompt-set datasets: spec checks, file reading rules, stable ids, manifest round trip with non-ASCII text."""

from __future__ import annotations

import pytest

from repshift.data.prompts import PromptSpec, build_prompt_manifest, prompt_id, read_prompts_file
from repshift.formats.manifest import read_manifest, write_manifest

MULTILINGUAL = [
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le petit chat dort paisiblement sur le rebord de la fenêtre.",
    "今日はとても良い天気なので、公園を散歩しました。",
    "मैं हर सुबह एक कप चाय पीता हूँ।",
    "Москва — столица России и крупнейший город страны.",
    'emoji 🦊 and a tab\there, "quotes" and a backslash \\n',
]


def test_inline_prompts_round_trip_through_the_manifest(tmp_path):
    spec = PromptSpec.from_dict("multi", {"source": "prompts", "modality": "text", "prompts": MULTILINGUAL})
    df, meta = build_prompt_manifest(spec, seed=0)
    write_manifest(df, meta, tmp_path / "multi.tsv")
    back, side = read_manifest(tmp_path / "multi.tsv")
    assert back["text"].tolist() == MULTILINGUAL  # byte-exact, in the given order
    assert side["non_ascii_prompts"] == 6 and side["n_rows"] == 6 and side["label_names"] == ["prompt"]
    assert side["spec"]["prompts"] == MULTILINGUAL and side["source"] == {"inline": True}
    assert (back["modality"] == "text").all() and (back["label"] == 0).all()
    assert back["group"].is_unique and set(back["fold"]) == set(range(5))
    assert "🦊" in (tmp_path / "multi.tsv").read_text(encoding="utf-8")


def test_ids_are_stable_under_reordering_and_additions():
    a, _ = build_prompt_manifest(PromptSpec(name="a", prompts=tuple(MULTILINGUAL[:3])), seed=0)
    b, _ = build_prompt_manifest(
        PromptSpec(name="b", prompts=("new one", *reversed(MULTILINGUAL[:3]))), seed=0
    )
    ids_a = dict(zip(a["text"], a["example_id"], strict=True))
    ids_b = dict(zip(b["text"], b["example_id"], strict=True))
    assert all(ids_b[t] == i for t, i in ids_a.items())
    eid, group = prompt_id("The quick brown fox jumps over the lazy dog.")
    assert eid.startswith("prompt-") and len(eid) == 19 and 0 <= group < 2**48
    assert eid == f"prompt-{group:012x}"


def test_folds_never_exceed_the_number_of_prompts():
    df, meta = build_prompt_manifest(PromptSpec(name="two", prompts=("one", "two")), seed=0)
    assert sorted(df["fold"]) == [0, 1] and meta["n_folds"] == 2
    df, meta = build_prompt_manifest(PromptSpec(name="one", prompts=("only",)), seed=0)
    assert df["fold"].tolist() == [0] and meta["n_folds"] == 1


def test_file_rules_bom_crlf_blank_lines_and_final_newline(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes(b"\xef\xbb\xbffirst\r\n\r\n  second  \r\n   \n\xc3\xbcber\n")
    entries, blank = read_prompts_file(path)
    assert entries == [(1, "first"), (3, "second"), (5, "über")] and blank == 2
    spec = PromptSpec.from_dict("f", {"source": "prompts", "modality": "text", "prompts_file": str(path)})
    df, meta = build_prompt_manifest(spec, seed=0)
    assert df["text"].tolist() == ["first", "second", "über"] and meta["skipped"] == {"blank_lines": 2}


def test_bad_files_fail_naming_file_and_line(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"ok\n" + "caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt:2: not valid UTF-8"):
        read_prompts_file(bad)
    with pytest.raises(FileNotFoundError, match="prompts_file not found"):
        read_prompts_file(tmp_path / "missing.txt")
    dup = tmp_path / "dup.txt"
    dup.write_text("a\nb\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dup.txt:3 repeats the one at .*dup.txt:1"):
        build_prompt_manifest(PromptSpec(name="d", prompts_file=str(dup)), seed=0)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no prompt"):
        build_prompt_manifest(PromptSpec(name="e", prompts_file=str(empty)), seed=0)


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({}, "exactly one of `prompts`"),
        ({"prompts": ["a"], "prompts_file": "x.txt"}, "exactly one of `prompts`"),
        ({"prompts": "just one string"}, "must be a list of strings"),
        ({"prompts": ["ok", "  "]}, r"prompts\[1\] must be a non-empty string"),
        ({"prompts": ["a"], "modality": "image"}, "text-only"),
        ({"prompts": ["a"], "classes": ["x"]}, "unknown key 'classes'"),
        ({"prompts": ["a"], "folds": 1}, "folds must be an integer >= 2"),
    ],
)
def test_spec_errors_name_the_problem(entry, needle):
    with pytest.raises(ValueError, match=needle):
        PromptSpec.from_dict("p", {"source": "prompts", "modality": "text"} | entry)
