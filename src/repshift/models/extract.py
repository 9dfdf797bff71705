"""Activation extraction: one forward pass per batch serves every requested layer.

Layer L is the output of decoder block L (0-based), read with a forward hook on that block, so the last
block is read before the final norm and Gemma Scope's ``blocks.L.hook_resid_post`` sees the same tensor.
The forward pass stops right after the deepest requested block (later blocks, the final norm and the LM
head are never computed). Batches are sorted by length to cut padding; activations stream to HDF5 batch by
batch, one file per layer, each renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from repshift import LAYER_CONVENTION
from repshift.config import ModelSpec
from repshift.formats import activations_h5
from repshift.formats.activations_h5 import POSITION_KINDS
from repshift.formats.atomic import atomic_path
from repshift.models.adapter import Adapter

log = logging.getLogger(__name__)


class _StopForward(Exception):
    """Raised by the deepest hook to end the forward pass early."""


@contextlib.contextmanager
def capture_layers(
    layers_mod: torch.nn.ModuleList, layers: Sequence[int], *, stop: bool = True
) -> Iterator[dict]:
    """Capture the outputs of the given blocks; optionally stop the forward after the deepest one.

    Decoder blocks return a Tensor in transformers 5.x and a tuple in 4.x: both are handled (taking
    ``out[0]`` of a Tensor would silently take batch row 0). Hooks are always removed.
    """
    captured: dict[int, torch.Tensor] = {}
    deepest = max(layers)
    handles = []

    def make_hook(idx: int):
        def hook(_module, _args, output):
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            captured[idx] = hidden.detach()
            if stop and idx == deepest:
                raise _StopForward

        return hook

    try:
        for idx in sorted(set(layers)):
            handles.append(layers_mod[idx].register_forward_hook(make_hook(idx)))
        yield captured
    finally:
        for h in handles:
            h.remove()


def run_capture(adapter: Adapter, batch, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    with torch.inference_mode(), capture_layers(adapter.layers, layers) as captured:
        try:
            adapter.forward(batch)
        except _StopForward:
            pass
    missing = set(layers) - set(captured)
    if missing:
        raise RuntimeError(f"blocks {sorted(missing)} did not run")
    return dict(captured)


def pool(hidden_BTD: torch.Tensor, kinds_BT: np.ndarray, modality: Sequence[str]) -> dict[str, np.ndarray]:
    """Pooled vectors per example: means over text / image positions and the last text position.

    BOS, pads and special tokens never enter a pool. An example with no position of a kind gets zeros
    for that pool (its count, stored beside, is 0) rather than NaN.
    """
    h = hidden_BTD.float()
    kinds = torch.from_numpy(kinds_BT).to(h.device)
    text = (kinds == POSITION_KINDS["text"]).float()
    image = (kinds == POSITION_KINDS["image"]).float()
    n_text = text.sum(1)
    n_image = image.sum(1)
    mean_text = (h * text[..., None]).sum(1) / n_text.clamp(min=1)[:, None]
    mean_image = (h * image[..., None]).sum(1) / n_image.clamp(min=1)[:, None]
    T = kinds.shape[1]
    pos = torch.arange(T, device=h.device)[None, :].expand_as(kinds)
    last_idx = torch.where(text.bool(), pos, torch.full_like(pos, -1)).max(1).values
    last = h[torch.arange(h.shape[0], device=h.device), last_idx.clamp(min=0)]
    last = torch.where((last_idx >= 0)[:, None], last, torch.zeros_like(last))
    is_image = torch.tensor([m == "image" for m in modality], device=h.device)[:, None]
    mean = torch.where(is_image, mean_image, mean_text)
    out = {"mean": mean, "mean_text": mean_text, "mean_image": mean_image, "last": last}
    out = {k: v.cpu().numpy() for k, v in out.items()}
    out["n_text"] = n_text.cpu().numpy().astype(np.int32)
    out["n_image"] = n_image.cpu().numpy().astype(np.int32)
    return out


def _append_token_rows(
    writer: activations_h5.ActivationWriter,
    rows: np.ndarray,
    acts_TD: np.ndarray,
    kinds_T: np.ndarray,
    ids_T: np.ndarray,
    lengths: np.ndarray,
) -> None:
    """Append the non-pad token rows of a whole batch (examples ``rows``, ``lengths[b]`` rows each, in order).

    One resize and one write per dataset for the batch instead of three per example (``append_tokens`` per
    example spent more time in h5py calls than the forward pass of a small model); the per-example start and
    length are then set exactly as ``append_tokens`` would have set them one example at a time.
    """
    first = writer.f["tokens/acts"].shape[0]
    writer.append_tokens(int(rows[0]), acts_TD, kinds_T, ids_T)
    writer.start[rows] = first + np.concatenate(([0], np.cumsum(lengths)[:-1]))
    writer.length[rows] = lengths


def plan_rows(manifest: pd.DataFrame, adapter_is_vlm: bool, reads_text: bool = True) -> pd.DataFrame:
    """Rows a model sees: all rows for a VLM's decoder; text rows only for a text-only model; image rows
    only for a vision tower."""
    if not reads_text:
        image = manifest[manifest["modality"] == "image"].reset_index(drop=True)
        if image.empty:
            raise ValueError("dataset has no image rows: a vision tower only reads images")
        return image
    if adapter_is_vlm:
        return manifest.reset_index(drop=True)
    text = manifest[manifest["modality"] == "text"].reset_index(drop=True)
    if text.empty:
        raise ValueError("dataset has no text rows: a text-only model cannot read images")
    return text


def extract_dataset(
    adapter: Adapter,
    manifest: pd.DataFrame,
    out_paths: Mapping[int, str | Path],
    *,
    image_dir: str | Path | None = None,
    tokens: bool = False,
    batch_size: int = 16,
    max_tokens: int = 64,
    store_dtype: str = "float16",
    attrs: Mapping[str, Any] | None = None,
    progress: bool = True,
    token_sink: Callable[..., None] | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Extract every layer in ``out_paths`` ({layer: h5 path}) for every manifest row in one pass per batch.

    Image rows are decoded and augmented (attribute variants) by ``workers`` threads, one batch ahead of the
    forward pass, so image I/O overlaps the model's compute.

    ``token_sink(layer, rows, acts_TD, kinds_T, ids_T, lengths)``, when given, receives each batch's non-pad
    token rows per layer (examples ``rows`` in order, ``lengths[b]`` rows each, float32), whether or not
    ``tokens`` stores them (the fused SAE path encodes them there and then).
    """
    from repshift.data.images import load_example_image

    layers = sorted(out_paths)
    adapter.spec.check_layers(layers)
    rows = plan_rows(manifest, adapter.spec.is_vlm, adapter.spec.reads_text)
    if rows.empty:
        raise ValueError("empty dataset: nothing to extract")
    n = len(rows)
    is_text = (rows["modality"] == "text").to_numpy()
    text_idx, image_idx = np.flatnonzero(is_text), np.flatnonzero(~is_text)
    if len(image_idx) and image_dir is None:
        raise ValueError("image rows need image_dir")

    batches, text_ids, n_truncated = _plan_batches(adapter, rows, text_idx, image_idx, batch_size, max_tokens)
    meta = _extraction_meta(adapter, attrs, store_dtype=store_dtype, max_tokens=max_tokens)
    meta.update(n_truncated=n_truncated, n_examples=n)
    with contextlib.ExitStack() as stack:
        files, writers = _open_writers(stack, out_paths, rows, meta, adapter.d_model, store_dtype, tokens)
        n_tokens = {"text": 0, "image": 0, "bos": 0, "special": 0}
        loader = stack.enter_context(ThreadPoolExecutor(max_workers=max(1, int(workers))))

        def load_images(b: int) -> list | None:
            """Futures of batch b's images (None for a text batch or past the end)."""
            if b >= len(batches) or batches[b][0] != "image":
                return None
            return [loader.submit(load_example_image, rows.iloc[int(i)], image_dir) for i in batches[b][1]]

        upcoming = load_images(0)
        bar = tqdm(
            batches, desc=f"extract {adapter.spec.name}", unit="batch", disable=not progress, mininterval=5
        )
        for b, (kind, idx) in enumerate(bar):
            idx = np.asarray(idx, dtype=np.int64)
            loading, upcoming = upcoming, load_images(b + 1)
            if kind == "text":
                batch = adapter.text_batch([text_ids[int(i)] for i in idx])
            else:
                images = [f.result() for f in loading]  # re-raises a load error naming the file
                batch = adapter.image_batch(images, adapter.spec.image_prompt)
            captured = run_capture(adapter, batch, layers)
            # decoder: the batch's positions; vision tower: its patch positions
            kinds_BT, ids_BT = adapter.captured_kinds(batch, captured[layers[0]])
            modality = rows["modality"].to_numpy()[idx]
            for name in n_tokens:
                n_tokens[name] += int((kinds_BT == POSITION_KINDS[name]).sum())
            _write_layers(
                captured, writers, idx, kinds_BT, ids_BT, modality, tokens=tokens, token_sink=token_sink
            )
            del captured
        for layer in layers:
            writers[layer].finish()
            for name, count in n_tokens.items():
                files[layer].attrs[f"n_tokens_{name}"] = count
        # files close before atomic rename (ExitStack unwinds in reverse order)
    log.info("wrote %d layers x %d examples; tokens %s", len(layers), n, n_tokens)
    return {"n_examples": n, "n_truncated": n_truncated, "n_tokens": n_tokens}


def _open_writers(stack, out_paths, rows, meta, d_model: int, store_dtype: str, tokens: bool):
    """One temporary HDF5 file (renamed into place when ``stack`` closes) with its row index and an
    :class:`ActivationWriter` per layer: ``({layer: h5py.File}, {layer: writer})``."""
    files, writers = {}, {}
    for layer in sorted(out_paths):
        tmp = stack.enter_context(atomic_path(out_paths[layer]))
        f = stack.enter_context(h5py.File(tmp, "w"))
        activations_h5.write_index(f, rows, {**meta, "layer": layer})
        files[layer] = f
        writers[layer] = activations_h5.ActivationWriter(
            f, n_examples=len(rows), d_model=d_model, store_dtype=store_dtype, tokens=tokens
        )
    return files, writers


def _plan_batches(adapter: Adapter, rows, text_idx, image_idx, batch_size: int, max_tokens: int):
    """Text rows tokenised once and sorted by length (stable, to cut padding), then image rows, in batches of
    ``batch_size``: ``([(kind, row indices)], {row: token ids}, number of texts truncated)``."""
    text_ids: dict[int, list[int]] = {}
    n_truncated = 0
    for i in text_idx:
        ids, trunc = adapter.text_ids(str(rows.at[i, "text"]), max_tokens)
        text_ids[int(i)] = ids
        n_truncated += trunc
    if n_truncated:
        log.info("%d of %d texts truncated to %d tokens", n_truncated, len(text_idx), max_tokens)
    text_order = sorted(text_ids, key=lambda i: (len(text_ids[i]), i))
    batches = [("text", text_order[s : s + batch_size]) for s in range(0, len(text_order), batch_size)]
    batches += [("image", list(image_idx[s : s + batch_size])) for s in range(0, len(image_idx), batch_size)]
    return batches, text_ids, n_truncated


def _extraction_meta(adapter: Adapter, attrs, *, store_dtype: str, max_tokens: int) -> dict[str, Any]:
    """The attributes every layer file of one extraction carries (the caller's ``attrs`` first)."""
    meta = dict(attrs or {})
    meta.update(
        model=adapter.spec.name,
        stream=adapter.stream,
        family=adapter.spec.family,
        d_model=adapter.d_model,
        num_layers=adapter.num_layers,
        store_dtype=store_dtype,
        compute_dtype=str(next(adapter.model.parameters()).dtype).replace("torch.", ""),
        max_tokens=max_tokens,
        pooling="mean: text positions (text rows) / image positions (image rows); BOS, pads, specials excluded",
        position_kinds=activations_h5.POSITION_KINDS,
        layer_convention=LAYER_CONVENTION,
    )
    return meta


def _write_layers(captured, writers, idx, kinds_BT, ids_BT, modality, *, tokens: bool, token_sink) -> None:
    """One batch's captured hidden states, layer by layer: pooled rows to each writer; the non-pad token rows
    (example by example, row-major mask order) to the writer when ``tokens`` and to ``token_sink`` when given.
    Each layer's tensor is dropped from ``captured`` once written."""
    per_token = tokens or token_sink is not None
    if per_token:
        keep_BT = kinds_BT != POSITION_KINDS["pad"]
        keep_t = torch.from_numpy(keep_BT)
        lengths = keep_BT.sum(1).astype(np.int64)
        kinds_T, ids_T = kinds_BT[keep_BT], ids_BT[keep_BT]
    for layer in sorted(captured):
        hidden = captured.pop(layer)
        pooled = pool(hidden, kinds_BT, modality)
        writers[layer].write_batch(idx, pooled, pooled["n_text"], pooled["n_image"])
        if per_token:
            acts_TD = hidden[keep_t.to(hidden.device)].float().cpu().numpy()
            if tokens:
                _append_token_rows(writers[layer], idx, acts_TD, kinds_T, ids_T, lengths)
            if token_sink is not None:
                token_sink(layer, idx, acts_TD, kinds_T, ids_T, lengths)
        del hidden


def shard_rows(manifest: pd.DataFrame, shard: int, n_shards: int) -> pd.DataFrame:
    """Contiguous slice ``shard`` of ``n_shards`` of the rows a model sees (merging in shard order restores them)."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is not in 0..{n_shards - 1}")
    bounds = np.linspace(0, len(manifest), n_shards + 1).round().astype(int)
    return manifest.iloc[bounds[shard] : bounds[shard + 1]].reset_index(drop=True)


def rows_to_extract(
    manifest: pd.DataFrame, spec: ModelSpec, manifest_path, shard: tuple[int, int] = (0, 1)
) -> pd.DataFrame:
    """The manifest rows ``spec``'s model reads, in extraction order, sliced to one shard; errors name the dataset."""
    if manifest.empty:
        raise ValueError(f"dataset {manifest_path} is empty: nothing to extract")
    if not spec.is_vlm and not (manifest["modality"] == "text").any():
        raise ValueError(f"{spec.name} is a text-only model but dataset {manifest_path} has only image rows")
    manifest = plan_rows(manifest, spec.is_vlm, spec.reads_text)
    if shard[1] > 1:
        manifest = shard_rows(manifest, *shard)
    return manifest


def check_partner_token_ids(
    spec: ModelSpec, location: str, manifest: pd.DataFrame, partners: Mapping, *, max_tokens: int
) -> None:
    """A text-only comparison needs identical ids: checked on the tokenizers, before any model loads.

    ``partners``: other model name -> ``{"spec": <model config>, "location": <hub id or folder>}``.
    """
    from repshift.models.tokens import check_same_token_ids, load_tokenizer

    texts = manifest.loc[manifest["modality"] == "text", "text"].astype(str).tolist()
    toks = {spec.name: load_tokenizer(spec, location)}
    for other, p in partners.items():
        toks[other] = load_tokenizer(ModelSpec.from_dict(other, p["spec"]), p["location"])
    n_checked = check_same_token_ids(texts, toks, max_tokens=max_tokens)
    log.info("token ids identical to %s on %d texts", sorted(partners), n_checked)


def extract_to_dir(
    spec: ModelSpec,
    manifest_path,
    out_dir,
    *,
    layers: Sequence[int],
    extraction: Mapping[str, Any],
    location: str,
    image_dir,
    tokens: bool,
    provenance_params: Mapping[str, Any],
    shard: tuple[int, int] = (0, 1),
    token_partners: Mapping | None = None,
    fused: Mapping | None = None,
    workers: int = 1,
) -> dict:
    """One extraction job: ``layer-L.h5`` per layer and ``extraction.json`` in ``out_dir``, written atomically.

    ``extraction``: the config's ``extraction`` section (dtype, device, batch_size, max_tokens, store_dtype);
    ``fused``: ``extraction.fused_sae`` (encode here, keep codes and pooled vectors, no dense token rows);
    ``provenance_params``: the rule's params, hashed into the provenance block. Returns the written summary.
    """
    from repshift.formats import manifest as formats_manifest
    from repshift.formats.atomic import atomic_dir, write_json
    from repshift.formats.layout import layer_file
    from repshift.formats.provenance import provenance
    from repshift.models.adapter import load_adapter

    spec.check_layers(layers)
    manifest, meta = formats_manifest.read_manifest(manifest_path)
    manifest = rows_to_extract(manifest, spec, manifest_path, shard)
    if token_partners:
        check_partner_token_ids(spec, location, manifest, token_partners, max_tokens=extraction["max_tokens"])
    adapter = load_adapter(spec, location=location, dtype=extraction["dtype"], device=extraction["device"])
    attrs = {
        "model_location": location,
        "model_revision": spec.revision if spec.source == "hub" else "",
        "dataset": Path(manifest_path).stem,
        "dataset_config_hash": meta.get("config_hash", ""),
        **provenance(provenance_params),
    }
    sink = _fused_sink(fused, adapter, extraction, spec.name, manifest, attrs["dataset"]) if fused else None
    with atomic_dir(out_dir) as tmp:
        summary = extract_dataset(
            adapter,
            manifest,
            {layer: layer_file(tmp, layer) for layer in layers},
            image_dir=image_dir,
            tokens=tokens,
            batch_size=extraction["batch_size"],
            max_tokens=extraction["max_tokens"],
            store_dtype=extraction["store_dtype"],
            attrs=attrs,
            token_sink=sink,
            workers=workers,
        )
        if sink is not None:
            sink.write(tmp, provenance_params)
        written = {**summary, "layers": list(layers), "shard": list(shard), **attrs}
        write_json(tmp / "extraction.json", written)
    return written


def _fused_sink(fused: Mapping, adapter: Adapter, extraction: Mapping, model: str, rows, dataset: str):
    from repshift.sae.encode import FusedEncoder

    return FusedEncoder(
        {**fused, "dataset": dataset},
        d_model=adapter.d_model,
        device=str(adapter.device),
        store_dtype=extraction["store_dtype"],
        model=model,
        rows=rows,
    )
