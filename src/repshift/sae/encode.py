"""Encoding activations into SAE codes: the fused in-extraction encoder, token groups, pooled codes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from repshift.formats import layout
from repshift.formats.provenance import provenance

log = logging.getLogger(__name__)


def pooled_codes(codes, offsets_N1: np.ndarray, kinds_T: np.ndarray, modality_N: np.ndarray) -> np.ndarray:
    """Per-example mean code over its content tokens (text tokens for text rows, image tokens for image rows)."""
    from scipy import sparse

    from repshift.formats.activations_h5 import POSITION_KINDS

    n, t = len(offsets_N1) - 1, len(kinds_T)
    example_T = np.repeat(np.arange(n), np.diff(offsets_N1))
    want_T = np.where(modality_N[example_T] == "image", POSITION_KINDS["image"], POSITION_KINDS["text"])
    content_T = kinds_T == want_T
    counts_N = np.bincount(example_T[content_T], minlength=n)
    weights = content_T / np.maximum(counts_N[example_T], 1)
    select_NT = sparse.csr_matrix((weights, (example_T, np.arange(t))), shape=(n, t))
    codes_TF = sparse.csr_matrix((codes.values, codes.indices, codes.offsets), shape=(t, codes.d_sae))
    return np.asarray((select_NT @ codes_TF).todense(), dtype=np.float32)


def transfer_rows(metrics_by_group: dict, *, sae: str, model: str, dataset: str, layer: int) -> list[dict]:
    """Tidy transfer-table rows (one per position kind and metric)."""
    return [
        {
            "sae": sae,
            "model": model,
            "dataset": dataset,
            "layer": int(layer),
            "position_kind": kind,
            "metric": m,
            "value": float(v),
        }
        for kind, metrics in metrics_by_group.items()
        for m, v in metrics.items()
    ]


def write_layer_codes(
    out_dir, layer: int, codes, tok, *, example_id, modality, attrs: dict, rows: list
) -> pd.DataFrame:
    """One layer's ``layer-L.codes.h5`` (codes, pooled codes, token index) and ``layer-L.transfer.tsv``: the
    layout both encode_sae and the fused extraction path write, so compare_sae reads either."""
    from repshift.formats import codes_h5

    path = layout.codes_file(out_dir, layer)
    codes_h5.write_codes(
        path,
        codes,
        example_offsets_N1=tok.offsets_N1,
        pooled_NF=pooled_codes(codes, tok.offsets_N1, tok.kinds_T, modality),
        attrs=attrs,
    )
    codes_h5.write_token_index(
        path, example_id=example_id, modality=modality, kinds_T=tok.kinds_T, ids_T=tok.ids_T
    )
    table = pd.DataFrame(rows)
    table.to_csv(layout.transfer_file(out_dir, layer), sep="\t", index=False, float_format="%.6g")
    return table


def write_transfer_summary(out_dir, tables: list) -> None:
    pd.concat(tables, ignore_index=True).to_csv(
        layout.transfer_summary(out_dir), sep="\t", index=False, float_format="%.6g"
    )


class FusedEncoder:
    """``extraction.fused_sae``: encode token activations inside the extraction job, batch by batch.

    Called as the extraction's ``token_sink`` (see :func:`repshift.models.extract.extract_dataset`); each batch's
    token rows are rounded to the stored dtype first (what encode_sae would read back from the activation file),
    encoded with the layer's SAE, and their transfer statistics accumulated per position kind; the dense rows are
    then dropped. :meth:`write` puts the codes in manifest order and writes the very layout encode_sae writes.
    """

    def __init__(
        self, fused: dict, *, d_model: int, device: str, store_dtype: str, model: str, rows: pd.DataFrame
    ):
        from repshift.sae import load as sae_load

        self.name = fused["sae"]
        self.dataset = fused.get("dataset", "")
        self.model = model
        self.store_dtype = np.dtype(store_dtype)
        self.modality = rows["modality"].astype(str).to_numpy()
        self.example_id = rows["example_id"].astype(str).to_numpy()
        self.sae_dirs = {int(k): Path(v) for k, v in fused["sae_dirs"].items()}
        self.saes = {}
        for layer, path in sorted(self.sae_dirs.items()):
            sae = sae_load.load_sae(path, device=device)
            sae_load.check_sae_compat(sae, d_model=d_model, layer=layer, model_name=model)
            self.saes[layer] = sae
        self.parts = {layer: [] for layer in self.saes}
        self.accs = {layer: {} for layer in self.saes}
        self.first = min(self.saes) if self.saes else None
        self.rows, self.lengths, self.kinds, self.ids = [], [], [], []

    def __call__(self, layer, rows, acts_TD, kinds_T, ids_T, lengths) -> None:
        from repshift.formats.activations_h5 import TokenActs
        from repshift.sae import codes as sae_codes
        from repshift.sae import metrics as sae_metrics

        layer = int(layer)
        if layer not in self.saes:
            return
        if layer == self.first:
            self.rows.append(np.asarray(rows, dtype=np.int64))
            self.lengths.append(np.asarray(lengths, dtype=np.int64))
            self.kinds.append(np.asarray(kinds_T))
            self.ids.append(np.asarray(ids_T))
        sae = self.saes[layer]
        x_TD = np.asarray(acts_TD).astype(self.store_dtype).astype(np.float32)
        codes = sae_codes.encode(sae, x_TD)
        self.parts[layer].append(codes)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tok = TokenActs(x_TD, offsets, np.asarray(kinds_T), np.asarray(ids_T))
        for kind, sel in token_groups(tok, self.modality[np.asarray(rows)]).items():
            if kind not in self.accs[layer]:
                self.accs[layer][kind] = sae_metrics.TransferAccumulator(codes.d_sae)
            self.accs[layer][kind].add(sae, x_TD[sel], codes.take(sel))

    def write(self, out_dir, params=None) -> None:
        """Write ``layer-L.codes.h5``, ``layer-L.transfer.tsv`` and ``transfer.tsv`` into ``out_dir``."""
        from repshift.formats.activations_h5 import TokenActs
        from repshift.sae import load as sae_load
        from repshift.sae.codes import SparseCodes

        rows = np.concatenate(self.rows)
        lengths = np.concatenate(self.lengths)
        n = len(self.modality)
        if sorted(rows.tolist()) != list(range(n)):
            raise RuntimeError(f"fused encoding saw {len(rows)} of {n} examples")
        start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        start_N, length_N = np.empty(n, np.int64), np.empty(n, np.int64)
        start_N[rows], length_N[rows] = start, lengths
        order = (
            np.concatenate([np.arange(a, a + m) for a, m in zip(start_N, length_N, strict=True)])
            if n
            else np.zeros(0, np.int64)
        )
        kinds_T, ids_T = np.concatenate(self.kinds)[order], np.concatenate(self.ids)[order]
        tok = TokenActs(
            np.zeros((0, 0), np.float32), np.concatenate([[0], np.cumsum(length_N)]), kinds_T, ids_T
        )
        tables = []
        for layer, sae in self.saes.items():
            codes = SparseCodes.concatenate(self.parts[layer]).take(order)
            metrics = {k: self.accs[layer][k].result() for k in TOKEN_GROUPS if k in self.accs[layer]}
            attrs = {
                "layer": layer,
                "model": self.model,
                "sae_path": str(self.sae_dirs[layer]),
                "neuronpedia_id": sae_load.sae_neuronpedia_id(sae) or "",
                "fused": True,
                **provenance(params),
            }
            rows_ = transfer_rows(metrics, sae=self.name, model=self.model, dataset=self.dataset, layer=layer)
            tables.append(
                write_layer_codes(
                    out_dir,
                    layer,
                    codes,
                    tok,
                    example_id=self.example_id,
                    modality=self.modality,
                    attrs=attrs,
                    rows=rows_,
                )
            )
        write_transfer_summary(out_dir, tables)


TOKEN_GROUPS = {
    "text": "text tokens of text-only inputs",
    "image": "image-token positions",
    "prompt": "text tokens of image inputs (the prompt after the image)",
    "bos": "BOS positions (reported apart; never pooled)",
}


def token_groups(tok, modality_N: np.ndarray) -> dict[str, np.ndarray]:
    """Token rows by position kind, with text split by input modality; pads are not stored, specials dropped."""
    from repshift.formats.activations_h5 import POSITION_KINDS

    example_T = np.repeat(np.arange(len(modality_N)), np.diff(tok.offsets_N1))
    image_row_T = modality_N[example_T] == "image"
    text_T = tok.kinds_T == POSITION_KINDS["text"]
    groups = {
        "text": text_T & ~image_row_T,
        "image": tok.kinds_T == POSITION_KINDS["image"],
        "prompt": text_T & image_row_T,
        "bos": tok.kinds_T == POSITION_KINDS["bos"],
    }
    return {k: np.flatnonzero(v) for k, v in groups.items() if v.any()}


def _device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def align_text_tokens(
    base_idx: dict, adapted_idx: dict, *, base: str, adapted: str
) -> tuple[np.ndarray, np.ndarray]:
    """Token rows of the text tokens (no BOS, pads, specials) of the text examples both models saw.

    Raises if an example's token ids differ: a text-only comparison needs identical inputs.
    """
    from repshift.formats.activations_h5 import POSITION_KINDS

    where = {
        e: j
        for j, (e, m) in enumerate(zip(adapted_idx["example_id"], adapted_idx["modality"], strict=True))
        if m == "text"
    }
    sel_a, sel_b = [], []
    for i, (eid, modality) in enumerate(zip(base_idx["example_id"], base_idx["modality"], strict=True)):
        if modality != "text" or eid not in where:
            continue
        j = where[eid]
        a0, a1 = base_idx["offsets"][i], base_idx["offsets"][i + 1]
        b0, b1 = adapted_idx["offsets"][j], adapted_idx["offsets"][j + 1]
        ids_a, ids_b = base_idx["ids_T"][a0:a1], adapted_idx["ids_T"][b0:b1]
        if not np.array_equal(ids_a, ids_b):
            raise ValueError(
                f"example {eid}: token ids differ between {base} and {adapted} "
                f"({ids_a[:8].tolist()}... vs {ids_b[:8].tolist()}...); a text-only comparison needs identical "
                "inputs (same tokenizer vocabulary, same BOS)"
            )
        keep = np.flatnonzero(base_idx["kinds_T"][a0:a1] == POSITION_KINDS["text"])
        sel_a.append(keep + a0)
        sel_b.append(keep + b0)
    if not sel_a:
        raise ValueError(f"no common text examples between {base} and {adapted}")
    return np.concatenate(sel_a), np.concatenate(sel_b)


def encode_layer(out_dir, acts_path, sae_path, layer: int, *, device: str, labels: dict, provenance_params):
    """Encode one layer's token activations with its SAE: ``layer-L.codes.h5`` and ``layer-L.transfer.tsv``.

    ``labels``: ``sae`` and ``dataset`` names for the transfer table. Returns that table.
    """
    from repshift.formats.activations_h5 import read_activations
    from repshift.sae import codes as sae_codes
    from repshift.sae import load as sae_load
    from repshift.sae import metrics as sae_metrics

    acts = read_activations(acts_path)
    tok = acts.tokens()
    sae = sae_load.load_sae(Path(sae_path), device=device)
    model = str(acts.attrs.get("model"))
    sae_load.check_sae_compat(sae, d_model=acts.d_model, layer=layer, model_name=model)
    codes = sae_codes.encode(sae, tok.acts_TD)
    metrics = {
        kind: sae_metrics.transfer_metrics(sae, tok.acts_TD[sel], codes.take(sel))
        for kind, sel in token_groups(tok, acts.modality).items()
    }
    rows = transfer_rows(metrics, sae=labels["sae"], model=model, dataset=labels["dataset"], layer=layer)
    attrs = {
        "layer": layer,
        "model": model,
        "sae_path": str(Path(sae_path)),
        "neuronpedia_id": sae_load.sae_neuronpedia_id(sae) or "",
        **provenance(provenance_params),
    }
    return write_layer_codes(
        out_dir, layer, codes, tok, example_id=acts.example_id, modality=acts.modality, attrs=attrs, rows=rows
    )


def encode_layers(
    acts_dir, out_dir, sae_dirs: dict[int, str], layers, *, device: str, labels: dict, provenance_params
) -> None:
    """encode_sae: every layer's codes and transfer table, then the summary, written into ``out_dir`` atomically."""
    from repshift.formats.atomic import atomic_dir
    from repshift.progress import progress

    tables = []
    with atomic_dir(out_dir) as tmp:
        for layer in progress([int(x) for x in layers], desc="encode_sae", unit="layer"):
            acts_path = layout.layer_file(acts_dir, layer)
            tables.append(
                encode_layer(
                    tmp,
                    acts_path,
                    sae_dirs[layer],
                    layer,
                    device=device,
                    labels=labels,
                    provenance_params=provenance_params,
                )
            )
        write_transfer_summary(tmp, tables)


def compare_code_dirs(
    base_dir, adapted_dir, layers, comp: dict, name: str, *, n_boot: int = 200, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """compare_sae: shift metrics and per-latent rows between two models' codes, per layer, on identical text
    tokens (ids asserted equal), with percentile-bootstrap intervals over examples (``lo``, ``hi``) and the number
    of examples ``n``. ``comp``: the comparison's config (base, adapted, sae, dataset)."""
    from repshift.formats import codes_h5
    from repshift.sae import metrics as sae_metrics

    tables, latent_tables = [], []
    for layer in (int(x) for x in layers):
        pa, pb = layout.codes_file(base_dir, layer), layout.codes_file(adapted_dir, layer)
        base_codes, meta = codes_h5.read_codes(pa, load_pooled=False)
        adapted_codes, _ = codes_h5.read_codes(pb, load_pooled=False)
        index_a = codes_h5.read_token_index(pa)
        rows_a, rows_b = align_text_tokens(
            index_a, codes_h5.read_token_index(pb), base=comp["base"], adapted=comp["adapted"]
        )
        codes_a, codes_b = base_codes.take(rows_a), adapted_codes.take(rows_b)
        metrics, latents = sae_metrics.shift_metrics(
            codes_a, codes_b, neuronpedia_id=meta["attrs"].get("neuronpedia_id") or None
        )
        example_T = np.searchsorted(index_a["offsets"], rows_a, side="right") - 1
        boot = sae_metrics.bootstrap_shift_intervals(codes_a, codes_b, example_T, n_boot=n_boot, seed=seed)
        n_examples = int(np.unique(example_T).size)
        common = {
            "comparison": name,
            **{k: comp[k] for k in ("base", "adapted", "sae", "dataset")},
            "layer": layer,
        }
        nan2 = (np.nan, np.nan)
        rows = [
            {**common, "metric": k, "value": float(v), "lo": boot.get(k, nan2)[0], "hi": boot.get(k, nan2)[1],
             "n": n_examples}
            for k, v in metrics.items()
        ]  # fmt: skip
        tables.append(pd.DataFrame(rows))
        latent_tables.append(latents.assign(**common))
    return pd.concat(tables, ignore_index=True), pd.concat(latent_tables, ignore_index=True)
