"""On-disk layout of sparse SAE codes (HDF5). This module owns the format; nothing else opens these files.

One file holds the codes of N tokens under one SAE, in CSR form, plus per-example bookkeeping::

    /indices          (nnz,)        uint16 when d_sae <= 65536, else int32   latent of each stored entry
    /values           (nnz,)        float16 or float32 (``values_dtype``)      its activation
    /offsets          (N+1,)        int64     token i owns entries offsets[i]:offsets[i+1]
    /example_offsets  (E+1,)        int64     example e owns tokens example_offsets[e]:example_offsets[e+1]
    /pooled           (E, d_sae)    optional  pooled (e.g. mean) codes per example, dense
    attrs: format, format_version, d_sae, n_tokens, n_examples, nnz, values_dtype, index_dtype,
           attrs_json (the caller's attributes + provenance, JSON), and the scalar ones again as plain attrs
           (readable with h5dump / h5ls without repshift).

Datasets are chunked and compressed (gzip with byte shuffle by default, or lzf). Files are written atomically.
Round trips are exact: indices always; values exactly when stored as float32, or as float16 when the values
are float16-representable. Values that would overflow float16 raise instead of becoming inf.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from repshift.formats.atomic import atomic_path
from repshift.formats.provenance import provenance

if TYPE_CHECKING:  # sae.codes imports torch: formats stays importable without it
    from repshift.sae.codes import SparseCodes

log = logging.getLogger(__name__)

FORMAT_NAME = "repshift-sparse-codes"
FORMAT_VERSION = 1

DS_INDICES = "indices"
DS_VALUES = "values"
DS_OFFSETS = "offsets"
DS_EXAMPLE_OFFSETS = "example_offsets"
DS_POOLED = "pooled"
ATTRS_JSON = "attrs_json"

#: Target number of elements per chunk of the 1-D datasets (1 MiB of float32).
CHUNK_ELEMENTS = 1 << 18

_VALUE_DTYPES = {"float16": np.float16, "float32": np.float32}
_COMPRESSIONS = ("gzip", "lzf", None)


def index_dtype_for(d_sae: int) -> np.dtype:
    """Smallest index dtype that holds latents 0..d_sae-1: uint16 up to 65536 latents, else int32."""
    return np.dtype(np.uint16) if int(d_sae) <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def _compression_kwargs(compression: str | None, itemsize: int) -> dict[str, Any]:
    if compression not in _COMPRESSIONS:
        raise ValueError(f"compression must be one of {_COMPRESSIONS}, got {compression!r}")
    if compression is None:
        return {}
    kwargs: dict[str, Any] = {"compression": compression}
    if compression == "gzip":
        kwargs["compression_opts"] = 4
    if itemsize > 1:
        kwargs["shuffle"] = True
    return kwargs


def _write_1d(f: h5py.File, name: str, data: np.ndarray, compression: str | None) -> None:
    chunk = max(1, min(int(data.size), CHUNK_ELEMENTS))
    f.create_dataset(
        name,
        data=data,
        chunks=(chunk,),
        maxshape=(None,),
        **_compression_kwargs(compression, data.dtype.itemsize),
    )


def _scalar_attr(value: Any) -> bool:
    return isinstance(value, str | bool | int | float | np.integer | np.floating | np.bool_)


def write_codes(
    path: str | os.PathLike,
    codes: SparseCodes,
    *,
    example_offsets_N1: np.ndarray,
    pooled_NF: np.ndarray | None = None,
    attrs: Mapping[str, Any] | None = None,
    values_dtype: str = "float32",
    pooled_dtype: str = "float32",
    compression: str | None = "gzip",
    params: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``codes`` (and per-example offsets / pooled codes) to ``path`` atomically.

    ``example_offsets_N1``: (E+1,) token offsets of the E examples (0 ... N). ``pooled_NF``: optional (E, d_sae)
    pooled codes. ``attrs``: JSON-able metadata (model, dataset, layer, SAE ...); a ``provenance`` entry
    (``repshift.formats.provenance.provenance(params)``) is added unless the caller gives one.
    """
    for key, value in (("values_dtype", values_dtype), ("pooled_dtype", pooled_dtype)):
        if value not in _VALUE_DTYPES:
            raise ValueError(f"{key} must be one of {sorted(_VALUE_DTYPES)}, got {value!r}")
    n, d_sae = codes.n_tokens, codes.d_sae
    ex_off = _checked_offsets(example_offsets_N1, n)
    n_examples = int(ex_off.size - 1)
    values = _checked_values(codes.values, values_dtype)
    if pooled_NF is not None:
        pooled_NF = np.asarray(pooled_NF)
        if pooled_NF.shape != (n_examples, d_sae):
            raise ValueError(f"pooled_NF must have shape ({n_examples}, {d_sae}), got {pooled_NF.shape}")

    meta = dict(attrs or {})
    meta.setdefault("provenance", provenance(params))
    try:
        meta_json = json.dumps(meta, sort_keys=True)
    except TypeError as exc:
        raise TypeError(f"attrs must be JSON-serialisable: {exc}") from exc

    idx_dtype = index_dtype_for(d_sae)
    final = Path(path)
    with atomic_path(final) as tmp, h5py.File(tmp, "w") as f:
        _write_1d(f, DS_INDICES, codes.indices.astype(idx_dtype), compression)
        _write_1d(f, DS_VALUES, values, compression)
        _write_1d(f, DS_OFFSETS, codes.offsets, compression)
        _write_1d(f, DS_EXAMPLE_OFFSETS, ex_off, compression)
        if pooled_NF is not None:
            pooled = pooled_NF.astype(_VALUE_DTYPES[pooled_dtype])
            f.create_dataset(
                DS_POOLED,
                data=pooled,
                chunks=(max(1, min(n_examples, 64)), max(1, min(d_sae, 4096))),
                **_compression_kwargs(compression, pooled.dtype.itemsize),
            )
        header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "d_sae": d_sae, "n_tokens": n}
        header |= {"n_examples": n_examples, "nnz": codes.nnz, "values_dtype": values_dtype}
        f.attrs.update({**header, "index_dtype": idx_dtype.name, ATTRS_JSON: meta_json})
        for key, value in meta.items():
            if _scalar_attr(value) and key not in f.attrs:
                f.attrs[key] = value
    log.info(
        "wrote %d tokens (%d examples, nnz %d, mean L0 %.1f, d_sae %d) to %s",
        n,
        n_examples,
        codes.nnz,
        codes.nnz / max(n, 1),
        d_sae,
        final,
    )
    return final


def _checked_offsets(example_offsets_N1, n: int) -> np.ndarray:
    """(E+1,) int64 example offsets rising from 0 to ``n`` tokens, or a ValueError saying what is wrong."""
    ex_off = np.asarray(example_offsets_N1)
    if ex_off.ndim != 1 or ex_off.size < 1 or not np.issubdtype(ex_off.dtype, np.integer):
        raise ValueError("example_offsets_N1 must be a 1-D integer array of length n_examples + 1")
    ex_off = ex_off.astype(np.int64)
    if ex_off[0] != 0 or ex_off[-1] != n or np.any(np.diff(ex_off) < 0):
        raise ValueError(
            f"example_offsets_N1 must rise from 0 to n_tokens={n}, got {ex_off[0]} ... {ex_off[-1]}"
        )
    return ex_off


def _checked_values(values: np.ndarray, values_dtype: str) -> np.ndarray:
    """``values`` cast to ``values_dtype``; refuses float16 when a value would overflow to inf."""
    if values_dtype == "float16":
        finite_max = float(np.finfo(np.float16).max)
        largest = float(np.abs(values).max()) if values.size else 0.0
        if largest > finite_max:
            raise ValueError(
                f"SAE activations up to {largest:.3g} overflow float16 (max {finite_max:g}); "
                "write with values_dtype='float32'"
            )
    return values.astype(_VALUE_DTYPES[values_dtype])


def _check_format(f: h5py.File, path: Path) -> None:
    fmt = f.attrs.get("format")
    if fmt != FORMAT_NAME:
        raise ValueError(f"{path} is not a repshift sparse-codes file (format attr {fmt!r})")
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has sparse-codes format version {version}, this repshift reads {FORMAT_VERSION}; "
            "re-run the encode rule"
        )


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The caller's attributes (with provenance) of a codes file, without reading the codes."""
    p = Path(path)
    with h5py.File(p, "r") as f:
        _check_format(f, p)
        return json.loads(f.attrs[ATTRS_JSON])


def read_codes(path: str | os.PathLike, *, load_pooled: bool = True) -> tuple[SparseCodes, dict[str, Any]]:
    """Read a codes file: ``(codes, meta)``.

    ``meta`` holds ``attrs`` (the caller's attributes, with provenance), ``example_offsets_N1`` (int64) and
    ``pooled_NF`` (float32 array, or None when absent / ``load_pooled=False``).
    """
    p = Path(path)
    with h5py.File(p, "r") as f:
        _check_format(f, p)
        d_sae = int(f.attrs["d_sae"])
        from repshift.sae.codes import SparseCodes

        codes = SparseCodes(
            indices=f[DS_INDICES][...].astype(np.int32),
            values=f[DS_VALUES][...].astype(np.float32),
            offsets=f[DS_OFFSETS][...].astype(np.int64),
            d_sae=d_sae,
        )
        meta: dict[str, Any] = {
            "attrs": json.loads(f.attrs[ATTRS_JSON]),
            "example_offsets_N1": f[DS_EXAMPLE_OFFSETS][...].astype(np.int64),
            "pooled_NF": f[DS_POOLED][...].astype(np.float32) if load_pooled and DS_POOLED in f else None,
        }
    return codes, meta


def raw_bytes_per_token(
    mean_l0: float, d_sae: int, *, values_dtype: str = "float16", dense_dtype: str = "float16"
) -> dict[str, float]:
    """Uncompressed storage per token of this layout vs a dense ``(N, d_sae)`` array.

    Sparse: ``mean_l0 * (index bytes + value bytes) + 8`` (the int64 offset). Returns ``sparse``, ``dense``
    and ``ratio`` = sparse / dense.
    """
    idx_bytes = index_dtype_for(d_sae).itemsize
    val_bytes = np.dtype(_VALUE_DTYPES[values_dtype]).itemsize
    sparse = float(mean_l0) * (idx_bytes + val_bytes) + np.dtype(np.int64).itemsize
    dense = float(d_sae) * np.dtype(_VALUE_DTYPES[dense_dtype]).itemsize
    return {"sparse": sparse, "dense": dense, "ratio": sparse / dense}


def storage_bytes_per_token(path: str | os.PathLike) -> dict[str, float]:
    """Bytes per stored token of a codes file, on disk and uncompressed, vs dense float16 codes.

    Keys: ``file`` (file size / n_tokens, everything included: pooled codes, metadata), ``sparse_raw``
    (uncompressed CSR bytes per token), ``dense_float16`` (2 * d_sae), ``file_ratio`` and ``raw_ratio``
    (each over ``dense_float16``), ``mean_l0``, ``n_tokens``.
    """
    p = Path(path)
    with h5py.File(p, "r") as f:
        _check_format(f, p)
        n = int(f.attrs["n_tokens"])
        d_sae = int(f.attrs["d_sae"])
        nnz = int(f.attrs["nnz"])
        values_dtype = str(f.attrs["values_dtype"])
    mean_l0 = nnz / max(n, 1)
    raw = raw_bytes_per_token(mean_l0, d_sae, values_dtype=values_dtype)
    file_bytes = p.stat().st_size / max(n, 1)
    dense = raw["dense"]
    return {
        "file": file_bytes,
        "sparse_raw": raw["sparse"],
        "dense_float16": dense,
        "file_ratio": file_bytes / dense,
        "raw_ratio": raw["sparse"] / dense,
        "mean_l0": mean_l0,
        "n_tokens": float(n),
    }


# -- token index: which example, kind and token id each code row belongs to ----------------------------------
DS_EXAMPLE_ID = "example_id"
DS_MODALITY = "modality"
DS_KINDS = "tokens/kind"
DS_TOKEN_IDS = "tokens/ids"


def write_token_index(path: str | os.PathLike, *, example_id, modality, kinds_T, ids_T) -> None:
    """Add the per-example ids/modality and per-token kinds/ids (from the activation file) to a codes file.

    Call it on the temporary path before the final rename (the codes file is not complete without it).
    """
    string = h5py.string_dtype("utf-8")
    with h5py.File(path, "a") as f:
        f.create_dataset(DS_EXAMPLE_ID, data=np.asarray(example_id, dtype=object), dtype=string)
        f.create_dataset(DS_MODALITY, data=np.asarray(modality, dtype=object), dtype=string)
        _write_1d(f, DS_KINDS, np.asarray(kinds_T, dtype=np.int8), "gzip")
        _write_1d(f, DS_TOKEN_IDS, np.asarray(ids_T, dtype=np.int32), "gzip")


def read_token_index(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """example_id, modality, offsets (per example, into the token rows), kinds_T and ids_T of a codes file."""
    with h5py.File(path, "r") as f:
        if DS_EXAMPLE_ID not in f:
            raise ValueError(f"{path} has no token index (written by an older repshift?); rerun encode_sae")
        return {
            "example_id": f[DS_EXAMPLE_ID].asstr()[...],
            "modality": f[DS_MODALITY].asstr()[...],
            "offsets": f[DS_EXAMPLE_OFFSETS][...],
            "kinds_T": f[DS_KINDS][...],
            "ids_T": f[DS_TOKEN_IDS][...],
        }
