"""The on-disk layout of activation files: one HDF5 file per (model, dataset, layer).

Layout (N examples, D model width, T stored tokens over all examples)::

    /example_id   (N,)   utf-8 str   manifest example ids, row order = manifest order
    /label        (N,)   int64
    /fold         (N,)   int64       folds stored in the manifest (grouped by base image): outer-CV repeat 0
    /fold_r<r>    (N,)   int64       optional: repeat r's folds (manifest column fold_r<r>, r = 1..R-1)
    /group        (N,)   int64       base image id
    /modality     (N,)   utf-8 str   text | image
    /n_text       (N,)   int32       text positions pooled (BOS, pads and specials excluded)
    /n_image      (N,)   int32       image-token positions pooled
    /pooled/mean_text   (N, D)       mean over text positions
    /pooled/mean_image  (N, D)       mean over image positions (zeros for text rows)
    /pooled/mean        (N, D)       mean_text for text rows, mean_image for image rows
    /pooled/last        (N, D)       last text position
    /tokens/acts  (T, D)             optional ragged token-level storage: no pads stored
    /tokens/start (N,)   int64       rows of example i are acts[start[i]:start[i]+length[i]]
    /tokens/length (N,)  int64       (examples are stored in processing order, sorted by length)
    /tokens/kind  (T,)   int8        POSITION_KINDS
    /tokens/ids   (T,)   int32       token ids

Attributes on the root record the model, layer, layer convention, dtypes, token counts and provenance.
A float16 file whose values leave float16's finite range is stored as float32 instead, with the attribute
``store_dtype_upgraded`` saying why (see :class:`ActivationWriter`).
Files are written to a temporary sibling and renamed into place only once complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from repshift.formats.manifest import fold_columns

logger = logging.getLogger(__name__)

LAYOUT_VERSION = 1
POSITION_KINDS = {"pad": 0, "bos": 1, "text": 2, "image": 3, "special": 4}
POOLINGS = ("mean", "mean_text", "mean_image", "last")
_STR = h5py.string_dtype("utf-8")


def _attr(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    if value is None:
        return ""
    return value


#: Largest finite float16 value: activations beyond it would be stored as inf.
FLOAT16_MAX = float(np.finfo(np.float16).max)


#: Root attribute set when a float16 file had to be stored as float32.
UPGRADED_ATTR = "store_dtype_upgraded"


class ActivationWriter:
    """Streams one layer's activations to an open HDF5 file, batch by batch (bounded memory).

    float16 storage is checked on every write: a value outside float16's finite range (|x| > 65504, e.g. Gemma's
    outlier dimensions or an fp16 overflow upstream) would silently become inf and poison every probe and SAE
    metric. The layer is then converted to float32 (rows written so far are copied), the root attribute
    ``store_dtype_upgraded`` records the largest |value| seen, and a warning is logged. Converting rather than
    failing keeps a long GPU job's result (the probes read float32 anyway); the attribute and the log say so.
    NaN values raise ``ValueError`` (no storage dtype can fix them).
    """

    def __init__(self, f: h5py.File, *, n_examples: int, d_model: int, store_dtype: str, tokens: bool):
        self.f = f
        self.n = n_examples
        self.d = d_model
        self.dtype = np.dtype(store_dtype)
        self.tokens = tokens
        chunk_rows = max(1, min(n_examples, max(1, (1 << 20) // max(1, d_model * self.dtype.itemsize))))
        for name in POOLINGS:
            f.create_dataset(
                f"pooled/{name}", shape=(n_examples, d_model), dtype=self.dtype, chunks=(chunk_rows, d_model)
            )
        f.create_dataset("n_text", shape=(n_examples,), dtype=np.int32)
        f.create_dataset("n_image", shape=(n_examples,), dtype=np.int32)
        if tokens:
            f.create_dataset(
                "tokens/acts",
                shape=(0, d_model),
                maxshape=(None, d_model),
                dtype=self.dtype,
                chunks=(min(4096, max(1, (1 << 20) // (d_model * self.dtype.itemsize))), d_model),
            )
            f.create_dataset("tokens/kind", shape=(0,), maxshape=(None,), dtype=np.int8, chunks=(65536,))
            f.create_dataset("tokens/ids", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(65536,))
            self.start = np.full(n_examples, -1, dtype=np.int64)
            self.length = np.zeros(n_examples, dtype=np.int64)
            self._end = 0

    def _check_range(self, values: np.ndarray, what: str) -> None:
        """Upgrade float16 storage to float32 when ``values`` leave float16's finite range."""
        if not values.size or not np.issubdtype(values.dtype, np.floating):
            return
        if np.isnan(values).any():
            raise ValueError(
                f"{what}: NaN activations for layer file {self.f.filename}; check the model's dtype"
            )
        if self.dtype != np.float16:
            return
        peak = float(np.abs(values).max())
        if peak <= FLOAT16_MAX:
            return
        names = [f"pooled/{name}" for name in POOLINGS] + (["tokens/acts"] if self.tokens else [])
        for name in names:
            old = self.f[name]
            data, shape, maxshape, chunks = old[...], old.shape, old.maxshape, old.chunks
            del self.f[name]
            self.f.create_dataset(name, shape=shape, maxshape=maxshape, dtype=np.float32, chunks=chunks)
            if data.size:
                self.f[name][...] = data
        self.dtype = np.dtype(np.float32)
        message = f"float32 (float16 requested; {what} has |x| = {peak:.6g} > {FLOAT16_MAX:g})"
        self.f.attrs[UPGRADED_ATTR] = message
        logger.warning("%s: layer stored as %s", self.f.filename, message)

    def write_batch(
        self, rows: np.ndarray, pooled: Mapping[str, np.ndarray], n_text: np.ndarray, n_image: np.ndarray
    ) -> None:
        """Write pooled vectors for manifest rows ``rows`` (in any order)."""
        for name in POOLINGS:
            self._check_range(np.asarray(pooled[name]), f"pooled/{name}")
        order = np.argsort(rows)
        idx = rows[order]
        for name in POOLINGS:
            self.f[f"pooled/{name}"][idx] = pooled[name][order].astype(self.dtype)
        self.f["n_text"][idx] = n_text[order]
        self.f["n_image"][idx] = n_image[order]

    def append_tokens(self, row: int, acts_TD: np.ndarray, kinds_T: np.ndarray, ids_T: np.ndarray) -> None:
        """Append the non-pad token rows of manifest row ``row``."""
        self._check_range(np.asarray(acts_TD), f"tokens of row {row}")
        start = self._end
        end = start + acts_TD.shape[0]
        for name, arr in (("tokens/acts", acts_TD), ("tokens/kind", kinds_T), ("tokens/ids", ids_T)):
            ds = self.f[name]
            ds.resize(end, axis=0)
            ds[start:end] = arr.astype(ds.dtype)
        self.start[row] = start
        self.length[row] = end - start
        self._end = end

    def finish(self) -> None:
        if self.tokens:
            missing = np.flatnonzero(self.start < 0)
            if len(missing):
                raise RuntimeError(f"token rows for {len(missing)} of {self.n} examples were never written")
            self.f.create_dataset("tokens/start", data=self.start)
            self.f.create_dataset("tokens/length", data=self.length)


def write_index(f: h5py.File, manifest, attrs: Mapping[str, Any]) -> None:
    """Example ids, labels, folds, groups and modality, aligned with the manifest by construction."""
    f.create_dataset(
        "example_id", data=np.asarray(manifest["example_id"].astype(str), dtype=object), dtype=_STR
    )
    f.create_dataset("modality", data=np.asarray(manifest["modality"].astype(str), dtype=object), dtype=_STR)
    for col in ("label", "group", *fold_columns(manifest.columns)):
        f.create_dataset(col, data=manifest[col].to_numpy(dtype=np.int64))
    f.attrs["layout_version"] = LAYOUT_VERSION
    for key, value in attrs.items():
        f.attrs[key] = _attr(value)


@dataclass(frozen=True)
class TokenActs:
    """Ragged token-level activations: example i owns rows offsets[i]:offsets[i+1]."""

    acts_TD: np.ndarray
    offsets_N1: np.ndarray
    kinds_T: np.ndarray
    ids_T: np.ndarray

    def mask(self, *kinds: str) -> np.ndarray:
        return np.isin(self.kinds_T, [POSITION_KINDS[k] for k in kinds])


@dataclass(frozen=True)
class Activations:
    """One layer's activations read back (pooled; token-level on demand)."""

    path: Path
    example_id: np.ndarray
    label: np.ndarray
    fold: np.ndarray
    group: np.ndarray
    modality: np.ndarray
    attrs: dict[str, Any]
    #: (R, N) outer folds of every stored repeat; row 0 is ``fold``. Files without repeat columns: 1 repeat.
    folds_RN: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.folds_RN is None:
            object.__setattr__(self, "folds_RN", np.asarray(self.fold)[None, :])

    @property
    def repeats(self) -> int:
        """How many outer-CV repeats the file stores."""
        return int(self.folds_RN.shape[0])

    def repeat_folds(self, repeats: int, rows: np.ndarray | None = None) -> np.ndarray:
        """(repeats, N) folds of the first ``repeats`` repeats (of ``rows``); raises when the file has fewer."""
        if repeats > self.repeats:
            raise ValueError(
                f"{self.path} stores {self.repeats} outer-CV repeat(s) but probes.settings.repeats is {repeats}: "
                "rebuild the dataset manifest and its activations (the repeats' folds are drawn with the manifest)"
            )
        folds = self.folds_RN[:repeats]
        return folds if rows is None else folds[:, rows]

    @property
    def d_model(self) -> int:
        return int(self.attrs["d_model"])

    def pooled(self, pooling: str = "mean", rows: np.ndarray | None = None) -> np.ndarray:
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; one of {POOLINGS}")
        with h5py.File(self.path, "r") as f:
            x = f[f"pooled/{pooling}"][...]
        x = x.astype(np.float32)
        return x if rows is None else x[rows]

    def has_tokens(self) -> bool:
        with h5py.File(self.path, "r") as f:
            return "tokens" in f

    def tokens(self, rows: np.ndarray | None = None) -> TokenActs:
        """Token-level storage of ``rows`` (default all), concatenated in manifest order."""
        with h5py.File(self.path, "r") as f:
            if "tokens" not in f:
                raise ValueError(
                    f"{self.path} has no token-level storage; it is kept only for (model, dataset) pairs "
                    "that a comparison or SAE training reads"
                )
            start, length = f["tokens/start"][...], f["tokens/length"][...]
            rows = np.arange(len(start)) if rows is None else np.asarray(rows)
            acts_all = f["tokens/acts"][...]
            kind_all, ids_all = f["tokens/kind"][...], f["tokens/ids"][...]
        take = (
            np.concatenate([np.arange(start[r], start[r] + length[r]) for r in rows])
            if len(rows)
            else np.zeros(0, dtype=np.int64)
        )
        offsets = np.concatenate([[0], np.cumsum(length[rows])]).astype(np.int64)
        return TokenActs(acts_all[take].astype(np.float32), offsets, kind_all[take], ids_all[take])


def read_activations(path: str | Path) -> Activations:
    path = Path(path)
    with h5py.File(path, "r") as f:
        attrs = {}
        for k, v in f.attrs.items():
            if isinstance(v, str) and v[:1] in "[{":
                try:
                    v = json.loads(v)
                except json.JSONDecodeError:
                    pass
            attrs[k] = v.item() if isinstance(v, np.generic) else v
        return Activations(
            path=path,
            example_id=f["example_id"].asstr()[...],
            label=f["label"][...],
            fold=f["fold"][...],
            group=f["group"][...],
            modality=f["modality"].asstr()[...],
            attrs=attrs,
            folds_RN=np.stack([f[c][...] for c in fold_columns(list(f.keys()))]),
        )


def merge_layer_files(shard_paths: list[str | Path], out_path: str | Path, *, chunk_rows: int = 4096) -> None:
    """Concatenate one layer's shard files (in shard order) into one file identical in layout to an unsharded
    extraction: index and pooled rows appended, token rows appended with their starts shifted. Written to a
    temporary sibling and renamed into place when complete."""
    from repshift.formats.atomic import atomic_path

    shard_paths = [Path(p) for p in shard_paths]
    if not shard_paths:
        raise ValueError("no shard files to merge")
    with contextlib.ExitStack() as stack:
        shards = [stack.enter_context(h5py.File(p, "r")) for p in shard_paths]
        first = shards[0]
        layers = {int(s.attrs["layer"]) for s in shards}
        models = {str(s.attrs["model"]) for s in shards}
        if len(layers) != 1 or len(models) != 1:
            raise ValueError(f"shards mix layers {sorted(layers)} or models {sorted(models)}: {shard_paths}")
        n = sum(len(s["example_id"]) for s in shards)
        tokens = "tokens" in first
        tmp = stack.enter_context(atomic_path(out_path))
        with h5py.File(tmp, "w") as out:
            for key, value in first.attrs.items():
                out.attrs[key] = value
            out.attrs["n_examples"] = n
            for key in [k for k in first.attrs if str(k).startswith("n_tokens_") or k == "n_truncated"]:
                out.attrs[key] = sum(int(s.attrs[key]) for s in shards)
            out.attrs["merged_from_shards"] = len(shards)
            for name in ("example_id", "modality"):
                out.create_dataset(name, data=np.concatenate([s[name][...] for s in shards]), dtype=_STR)
            folds = fold_columns(list(first.keys()))
            for name in ("label", "group", "n_text", "n_image", *folds):
                out.create_dataset(name, data=np.concatenate([s[name][...] for s in shards]))
            d = first["pooled/mean"].shape[1]
            # a shard upgraded to float32 (values beyond float16's range) upgrades the merged file
            dtype = np.result_type(*[s["pooled/mean"].dtype for s in shards])
            upgraded = [str(s.attrs[UPGRADED_ATTR]) for s in shards if UPGRADED_ATTR in s.attrs]
            if upgraded:
                out.attrs[UPGRADED_ATTR] = upgraded[0]
            for name in POOLINGS:
                ds = out.create_dataset(
                    f"pooled/{name}",
                    shape=(n, d),
                    dtype=dtype,
                    chunks=(min(first[f"pooled/{name}"].chunks[0], max(n, 1)), d),
                )
                row = 0
                for s in shards:
                    src = s[f"pooled/{name}"]
                    for a in range(0, src.shape[0], chunk_rows):
                        block = src[a : a + chunk_rows]
                        ds[row + a : row + a + len(block)] = block
                    row += src.shape[0]
            if tokens:
                total = sum(s["tokens/acts"].shape[0] for s in shards)
                acts = out.create_dataset(
                    "tokens/acts",
                    shape=(total, d),
                    dtype=np.result_type(*[s["tokens/acts"].dtype for s in shards]),
                    chunks=(min(first["tokens/acts"].chunks[0], max(total, 1)), d),
                )
                kinds, ids, starts, lengths = [], [], [], []
                base = 0
                for s in shards:
                    src = s["tokens/acts"]
                    for a in range(0, src.shape[0], chunk_rows):
                        block = src[a : a + chunk_rows]
                        acts[base + a : base + a + len(block)] = block
                    kinds.append(s["tokens/kind"][...])
                    ids.append(s["tokens/ids"][...])
                    starts.append(s["tokens/start"][...] + base)
                    lengths.append(s["tokens/length"][...])
                    base += src.shape[0]
                out.create_dataset("tokens/kind", data=np.concatenate(kinds))
                out.create_dataset("tokens/ids", data=np.concatenate(ids))
                out.create_dataset("tokens/start", data=np.concatenate(starts))
                out.create_dataset("tokens/length", data=np.concatenate(lengths))
