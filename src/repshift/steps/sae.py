"""Steps of the SAE stage: fetching / training SAEs, encoding activations, comparing codes across models."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from repshift.atomic import atomic_dir, atomic_path
from repshift.provenance import provenance
from repshift.steps._base import layer_file, step

log = logging.getLogger(__name__)


@step
def fetch_sae(*, input, output, params, **_):
    """Fetch one pretrained SAE (sae-lens release + id) into a local folder (needs the hub once)."""
    from repshift import sae as sae_mod

    sae_mod.fetch_pretrained_sae(params["release"], params["sae_id"], output["sae"])


@step
def train_demo_sae(*, input, output, params, **_):
    """Fit the demo's tiny JumpReLU SAEs, one per layer, on the demo LLM's text-token activations."""
    from repshift import sae as sae_mod
    from repshift.h5io import read_activations

    train = params["train"]
    with atomic_dir(output["saes"]) as tmp:
        for layer in params["layers"]:
            acts = read_activations(layer_file(input["acts"], layer))
            tok = acts.tokens(np.flatnonzero(acts.modality == "text"))
            keep = tok.mask("text")  # BOS, pads and specials never enter SAE training
            sae_mod.train_demo_sae(
                tok.acts_TD[keep],
                tmp / f"layer-{int(layer)}",
                layer=int(layer),
                d_sae=int(train.get("d_sae", 256)),
                steps=int(train.get("steps", 300)),
                seed=int(params["seed"]),
                model_name=train["model"],
            )


def pooled_codes(codes, offsets_N1: np.ndarray, kinds_T: np.ndarray, modality_N: np.ndarray) -> np.ndarray:
    """Per-example mean code over its content tokens (text tokens for text rows, image tokens for image rows)."""
    from scipy import sparse

    from repshift.h5io import POSITION_KINDS

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
    from repshift import codes_h5

    path = Path(out_dir) / f"layer-{int(layer)}.codes.h5"
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
    table.to_csv(
        Path(out_dir) / f"layer-{int(layer)}.transfer.tsv", sep="\t", index=False, float_format="%.6g"
    )
    return table


def write_transfer_summary(out_dir, tables: list) -> None:
    pd.concat(tables, ignore_index=True).to_csv(
        Path(out_dir) / "transfer.tsv", sep="\t", index=False, float_format="%.6g"
    )


@step
def encode_sae(*, input, output, params, wildcards=None, **_):
    """Encode one model's token-level activations with each layer's SAE; transfer metrics per position kind."""
    from repshift import sae as sae_mod
    from repshift.h5io import read_activations

    wc = wildcards or {}
    device = _device(params.get("device", "auto"))
    sae_dirs = {int(k): v for k, v in params["sae_dirs"].items()}
    tables = []
    with atomic_dir(output["codes"]) as tmp:
        for layer in params["layers"]:
            layer = int(layer)
            acts = read_activations(layer_file(input["acts"], layer))
            tok = acts.tokens()
            sae_path = Path(sae_dirs[layer])
            sae = sae_mod.load_sae(sae_path, device=device)
            model = str(acts.attrs.get("model"))
            sae_mod.check_sae_compat(sae, d_model=acts.d_model, layer=layer, model_name=model)
            codes = sae_mod.encode(sae, tok.acts_TD)
            metrics = {
                kind: sae_mod.transfer_metrics(sae, tok.acts_TD[sel], codes.take(sel))
                for kind, sel in token_groups(tok, acts.modality).items()
            }
            rows = transfer_rows(
                metrics, sae=wc.get("sae", ""), model=model, dataset=wc.get("dataset", ""), layer=layer
            )
            attrs = {
                "layer": layer,
                "model": model,
                "sae_path": str(sae_path),
                "neuronpedia_id": sae_mod.sae_neuronpedia_id(sae) or "",
                **provenance(params),
            }
            tables.append(
                write_layer_codes(
                    tmp,
                    layer,
                    codes,
                    tok,
                    example_id=acts.example_id,
                    modality=acts.modality,
                    attrs=attrs,
                    rows=rows,
                )
            )
        write_transfer_summary(tmp, tables)


class FusedEncoder:
    """``extraction.fused_sae``: encode token activations inside the extraction job, batch by batch.

    Called as the extraction's ``token_sink`` (see :func:`repshift.extract.extract_dataset`); each batch's
    token rows are rounded to the stored dtype first (what encode_sae would read back from the activation file),
    encoded with the layer's SAE, and their transfer statistics accumulated per position kind; the dense rows are
    then dropped. :meth:`write` puts the codes in manifest order and writes the very layout encode_sae writes.
    """

    def __init__(
        self, fused: dict, *, d_model: int, device: str, store_dtype: str, model: str, rows: pd.DataFrame
    ):
        from repshift import sae as sae_mod

        self.name = fused["sae"]
        self.dataset = fused.get("dataset", "")
        self.model = model
        self.store_dtype = np.dtype(store_dtype)
        self.modality = rows["modality"].astype(str).to_numpy()
        self.example_id = rows["example_id"].astype(str).to_numpy()
        self.sae_dirs = {int(k): Path(v) for k, v in fused["sae_dirs"].items()}
        self.saes = {}
        for layer, path in sorted(self.sae_dirs.items()):
            sae = sae_mod.load_sae(path, device=device)
            sae_mod.check_sae_compat(sae, d_model=d_model, layer=layer, model_name=model)
            self.saes[layer] = sae
        self.parts = {layer: [] for layer in self.saes}
        self.accs = {layer: {} for layer in self.saes}
        self.first = min(self.saes) if self.saes else None
        self.rows, self.lengths, self.kinds, self.ids = [], [], [], []

    def __call__(self, layer, rows, acts_TD, kinds_T, ids_T, lengths) -> None:
        from repshift import sae as sae_mod
        from repshift.h5io import TokenActs

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
        codes = sae_mod.encode(sae, x_TD)
        self.parts[layer].append(codes)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tok = TokenActs(x_TD, offsets, np.asarray(kinds_T), np.asarray(ids_T))
        for kind, sel in token_groups(tok, self.modality[np.asarray(rows)]).items():
            if kind not in self.accs[layer]:
                self.accs[layer][kind] = sae_mod.TransferAccumulator(codes.d_sae)
            self.accs[layer][kind].add(sae, x_TD[sel], codes.take(sel))

    def write(self, out_dir, params=None) -> None:
        """Write ``layer-L.codes.h5``, ``layer-L.transfer.tsv`` and ``transfer.tsv`` into ``out_dir``."""
        from repshift import sae as sae_mod
        from repshift.h5io import TokenActs
        from repshift.sae import SparseCodes

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
                "neuronpedia_id": sae_mod.sae_neuronpedia_id(sae) or "",
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
    from repshift.h5io import POSITION_KINDS

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
    from repshift.h5io import POSITION_KINDS

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


@step
def compare_sae(*, input, output, params, wildcards=None, **_):
    """Shift between two models' SAE codes at every layer, on identical text tokens (ids asserted equal)."""
    from repshift import codes_h5
    from repshift import sae as sae_mod

    wc = wildcards or {}
    comp = params["comparison"]
    tables, latent_tables = [], []
    for layer in params["layers"]:
        layer = int(layer)
        pa = Path(input["base"]) / f"layer-{layer}.codes.h5"
        pb = Path(input["adapted"]) / f"layer-{layer}.codes.h5"
        base_codes, meta = codes_h5.read_codes(pa, load_pooled=False)
        adapted_codes, _ = codes_h5.read_codes(pb, load_pooled=False)
        rows_a, rows_b = align_text_tokens(
            codes_h5.read_token_index(pa),
            codes_h5.read_token_index(pb),
            base=comp["base"],
            adapted=comp["adapted"],
        )
        np_id = meta["attrs"].get("neuronpedia_id") or None
        metrics, latents = sae_mod.shift_metrics(
            base_codes.take(rows_a), adapted_codes.take(rows_b), neuronpedia_id=np_id
        )
        common = {
            "comparison": wc.get("comparison", ""),
            "base": comp["base"],
            "adapted": comp["adapted"],
            "sae": comp["sae"],
            "dataset": comp["dataset"],
            "layer": layer,
        }
        tables.append(pd.DataFrame([{**common, "metric": k, "value": float(v)} for k, v in metrics.items()]))
        latent_tables.append(latents.assign(**common))
    with atomic_path(output["shift"]) as tmp:
        pd.concat(tables, ignore_index=True).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    with atomic_path(output["latents"]) as tmp:
        pd.concat(latent_tables, ignore_index=True).to_csv(tmp, sep="\t", index=False, float_format="%.6g")


@step
def spliced_loss(*, input, output, params, wildcards=None, **_):
    """CE loss with each layer's SAE reconstruction spliced into the model's own forward pass (text rows)."""
    from repshift import datasets, spliced
    from repshift import sae as sae_mod
    from repshift.config import ModelSpec
    from repshift.models import load_adapter

    wc = wildcards or {}
    name = wc.get("model") or params.get("model") or "model"
    spec = ModelSpec.from_dict(name, params["spec"])
    ext, cfg = params["extraction"], params["spliced"]
    manifest, _ = datasets.read_manifest(input["manifest"])
    texts = manifest.loc[manifest["modality"] == "text", "text"].astype(str).tolist()
    if not texts:
        raise ValueError(f"dataset {input['manifest']} has no text rows: spliced CE runs on text")
    texts = spliced.sample_prompts(texts, cfg.get("max_prompts"), int(params.get("seed", 0)))
    location = spec.id if spec.source == "hub" else str(input["model"])
    adapter = load_adapter(spec, location=location, dtype=ext["dtype"], device=ext["device"])
    device = str(adapter.device)
    saes = {}
    for layer, path in sorted((int(k), v) for k, v in params["sae_dirs"].items()):
        sae = sae_mod.load_sae(path, device=device)
        sae_mod.check_sae_compat(sae, d_model=adapter.d_model, layer=layer, model_name=name)
        saes[layer] = sae
    ids = [adapter.text_ids(t, int(ext["max_tokens"]))[0] for t in texts]
    results = spliced.spliced_ce(adapter, saes, ids, batch_size=int(cfg.get("batch_size", 8)), progress=True)
    table = spliced.spliced_table(results, sae=wc.get("sae", ""), model=name, dataset=wc.get("dataset", ""))
    with atomic_path(output["tsv"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def _paths(value) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


@step
def plot_latent_density(*, input, output, params, **_):
    """Histograms of log10 latent firing frequency per model and layer, dead latents apart (PDF, PNG, TSV)."""
    from repshift import figures_sae

    figures_sae.plot_latent_density(
        _paths(input.get("codes", [])), out_pdf=output["pdf"], out_png=output["png"], out_tsv=output["tsv"]
    )


@step
def plot_latents_shift(*, input, output, params, **_):
    """Latents gained and lost per layer, and the top-latents table with Neuronpedia links (PDF, PNG, TSV)."""
    from repshift import figures_sae

    figures_sae.plot_latents_shift(
        _paths(input.get("latents", [])), out_pdf=output["pdf"], out_png=output["png"], out_tsv=output["tsv"]
    )
