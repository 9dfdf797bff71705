"""The report's rollouts table: rows in reading order (unedited first per example), every cell escaped."""

import json

import pandas as pd

from repshift.figures.steering_rollouts import read_rollouts, write_rollout_table


def _record(example, direction, alpha, text, model="m", layer=2):
    kind = "random" if direction.startswith("random-") else direction
    return {"model": model, "example_id": example, "pair": "cat-dog", "layer": layer,
            "direction": direction, "kind": kind, "alpha": alpha, "text": text}  # fmt: skip


def test_unedited_rollout_first_for_each_example_then_kinds_in_order(tmp_path):
    path = tmp_path / "layer-2.rollouts.jsonl"
    recs = [
        _record("b", "random-0", 1.0, "r"),
        _record("a", "sae", 2.0, "s2"),
        _record("a", "probe", 1.0, "p1"),
        _record("a", "none", 0.0, "clean a"),
        _record("b", "none", 0.0, "clean b"),
        _record("a", "sae", 1.0, "s1"),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    t = read_rollouts([path])
    assert list(zip(t["example_id"], t["text"], strict=True)) == [
        ("a", "clean a"),
        ("a", "p1"),
        ("a", "s1"),
        ("a", "s2"),
        ("b", "clean b"),
        ("b", "r"),
    ]


def test_html_escapes_generated_text_and_tsv_keeps_it(tmp_path):
    path = tmp_path / "r.jsonl"
    nasty = "<script>x</script> & a\tb"
    path.write_text(json.dumps(_record("a", "none", 0.0, nasty)) + "\n")
    out_html, out_tsv = tmp_path / "t.html", tmp_path / "t.tsv"
    write_rollout_table([path], out_html=out_html, out_tsv=out_tsv)
    page = out_html.read_text()
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt; &amp; a\tb" in page
    assert '<tr class="unedited">' in page
    assert pd.read_csv(out_tsv, sep="\t")["text"].tolist() == [nasty]
