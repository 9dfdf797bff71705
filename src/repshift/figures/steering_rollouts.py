"""The steering rollouts as one small table for human review in the report: every greedy rollout of every
(model, pair, layer), the unedited one (alpha 0) first for each example, then each direction kind by alpha.

Rows come from the steer_model jobs' ``layer-L.rollouts.jsonl`` records unchanged (text included, HTML-escaped).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from repshift.formats.atomic import atomic_path

COLUMNS = ["model", "pair", "layer", "example_id", "direction", "kind", "alpha", "text"]
KIND_ORDER = {"none": 0, "probe": 1, "mean-diff": 2, "sae": 3, "random": 4}
HEADERS = {"example_id": "example", "kind": "direction kind", "alpha": "α"}
STYLE = (
    "body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
    "th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}"
    "th{background:#eee}tr.unedited td{background:#f4f8ff}td.text{font-family:monospace;white-space:pre-wrap}"
)


def read_rollouts(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Every rollout record of ``paths`` (JSON lines), sorted for reading: per (model, pair, layer, example), the
    unedited rollout first, then the direction kinds (probe, mean-diff, sae, random) by alpha."""
    records = []
    for path in paths:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        records += [json.loads(line) for line in lines if line.strip()]
    df = pd.DataFrame(records).reindex(columns=COLUMNS)
    if df.empty:
        return df
    order = df["kind"].map(KIND_ORDER).fillna(len(KIND_ORDER))
    df = df.assign(_order=order).sort_values(
        ["model", "pair", "layer", "example_id", "_order", "direction", "alpha"], kind="stable"
    )
    return df.drop(columns="_order").reset_index(drop=True)


def rollout_html(table: pd.DataFrame, title: str = "repshift steering rollouts") -> str:
    """A self-contained HTML page holding ``table`` (unedited rows shaded; every cell escaped)."""
    head = "".join(f"<th>{html.escape(HEADERS.get(c, c))}</th>" for c in COLUMNS)
    rows = []
    for _, r in table.iterrows():
        cells = "".join(
            f'<td class="{c}">{html.escape(_cell(r[c]))}</td>'
            if c == "text"
            else f"<td>{html.escape(_cell(r[c]))}</td>"
            for c in COLUMNS
        )
        cls = ' class="unedited"' if r["kind"] == "none" else ""
        rows.append(f"<tr{cls}>{cells}</tr>")
    note = (
        "Greedy rollouts with only the prefill edited at the output of block L (decoding from the KV cache); "
        "direction none, alpha 0: the unedited model."
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h3>{html.escape(title)}</h3><p>{html.escape(note)}</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table></body></html>\n"
    )


def _cell(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return str(value)


def write_rollout_table(paths: Sequence[str | Path], *, out_html, out_tsv) -> pd.DataFrame:
    """The rollout table of ``paths`` as HTML (for the report) and TSV (the same rows)."""
    table = read_rollouts(paths)
    with atomic_path(out_html) as tmp:
        Path(tmp).write_text(rollout_html(table), encoding="utf-8")
    with atomic_path(out_tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table
