"""Sparse SAE codes (CSR rows per token) and encoding activations with an sae-lens SAE."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy import sparse

from repshift.progress import progress

if TYPE_CHECKING:
    from sae_lens import SAE


log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class SparseCodes:
    """SAE codes of N tokens in CSR form: token i's active latents are ``indices[offsets[i]:offsets[i+1]]``.

    Canonical form (checked on construction): latents strictly increasing within each token, so two
    ``SparseCodes`` holding the same codes hold the same arrays. Only non-zero activations are stored.
    Slicing, row selection, stacking and densifying go through ``scipy.sparse.csr_array`` (:meth:`csr`); the
    class adds the validation, fixed dtypes (int32 latents, float32 values) and the float64 per-latent sums
    (scipy would accumulate in float32).
    """

    indices: np.ndarray  # int32, (nnz,)
    values: np.ndarray  # float32, (nnz,)
    offsets: np.ndarray  # int64, (N+1,)
    d_sae: int

    def __post_init__(self) -> None:
        idx = np.ascontiguousarray(self.indices, dtype=np.int32)
        val = np.ascontiguousarray(self.values, dtype=np.float32)
        off = np.ascontiguousarray(self.offsets, dtype=np.int64)
        object.__setattr__(self, "indices", idx)
        object.__setattr__(self, "values", val)
        object.__setattr__(self, "offsets", off)
        object.__setattr__(self, "d_sae", int(self.d_sae))
        if idx.ndim != 1 or val.ndim != 1 or off.ndim != 1:
            raise ValueError("indices, values and offsets must be 1-D")
        if idx.shape != val.shape:
            raise ValueError(f"indices ({idx.size}) and values ({val.size}) differ in length")
        if off.size < 1 or off[0] != 0 or off[-1] != idx.size:
            raise ValueError(f"offsets must start at 0 and end at nnz={idx.size}")
        if np.any(np.diff(off) < 0):
            raise ValueError("offsets must be non-decreasing")
        if self.d_sae < 1:
            raise ValueError(f"d_sae must be >= 1, got {self.d_sae}")
        if idx.size:
            if idx.min() < 0 or idx.max() >= self.d_sae:
                raise ValueError(f"latent indices must lie in [0, {self.d_sae})")
            keys = self.token_ids().astype(np.int64) * self.d_sae + idx
            if np.any(np.diff(keys) <= 0):
                raise ValueError("latents must be strictly increasing within each token (canonical CSR)")

    # -- shape -------------------------------------------------------------------------------------------
    @property
    def n_tokens(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    @property
    def l0_N(self) -> np.ndarray:
        """Number of active latents per token (int64)."""
        return np.diff(self.offsets)

    def token_ids(self) -> np.ndarray:
        """Token index of every stored entry, (nnz,) int64."""
        return np.repeat(np.arange(self.n_tokens, dtype=np.int64), self.l0_N)

    # -- conversions -------------------------------------------------------------------------------------
    def csr(self) -> sparse.csr_array:
        """The same codes as a ``scipy.sparse.csr_array`` of shape (N, d_sae), sharing the arrays."""
        return sparse.csr_array((self.values, self.indices, self.offsets), shape=(self.n_tokens, self.d_sae))

    @classmethod
    def from_csr(cls, csr: Any) -> SparseCodes:
        """From any scipy sparse matrix or array of shape (N, d_sae) (explicit zeros dropped, indices sorted)."""
        csr = sparse.csr_array(csr, copy=True)
        csr.eliminate_zeros()
        csr.sum_duplicates()  # also sorts the indices: the canonical form
        return cls(csr.indices, csr.data, csr.indptr, csr.shape[1])

    def to_dense(self, dtype: Any = np.float32) -> np.ndarray:
        """Dense codes_NF (N, d_sae)."""
        return self.csr().toarray().astype(dtype, copy=False)

    @classmethod
    def from_dense(cls, codes_NF: np.ndarray | torch.Tensor) -> SparseCodes:
        if isinstance(codes_NF, torch.Tensor):
            codes_NF = codes_NF.detach().float().cpu().numpy()
        codes_NF = np.asarray(codes_NF)
        if codes_NF.ndim != 2:
            raise ValueError(f"codes_NF must be 2-D, got shape {codes_NF.shape}")
        return cls.from_csr(sparse.csr_array(codes_NF.astype(np.float32, copy=False)))

    @classmethod
    def concatenate(cls, parts: list[SparseCodes]) -> SparseCodes:
        """Stack the tokens of several ``SparseCodes`` (same d_sae) in order."""
        if not parts:
            raise ValueError("nothing to concatenate")
        d_sae = parts[0].d_sae
        if any(p.d_sae != d_sae for p in parts):
            raise ValueError(
                f"cannot concatenate codes of different widths {sorted({p.d_sae for p in parts})}"
            )
        return cls.from_csr(sparse.vstack([p.csr() for p in parts], format="csr"))

    def slice_tokens(self, start: int, stop: int) -> SparseCodes:
        """Codes of tokens ``start:stop`` (a copy)."""
        return SparseCodes.from_csr(self.csr()[start:stop])

    def take(self, rows: np.ndarray) -> SparseCodes:
        """Codes of the token rows ``rows`` (any order, repeats allowed), as a new SparseCodes."""
        return SparseCodes.from_csr(self.csr()[np.asarray(rows, dtype=np.int64)])

    # -- per-latent statistics -----------------------------------------------------------------------------
    def fire_count_F(self) -> np.ndarray:
        """How many tokens each latent fires on, (d_sae,) int64."""
        return np.bincount(self.indices, minlength=self.d_sae).astype(np.int64)

    def sum_F(self) -> np.ndarray:
        """Sum of each latent's activation over tokens, (d_sae,) float64."""
        return np.bincount(self.indices, weights=self.values.astype(np.float64), minlength=self.d_sae)

    def mean_F(self) -> np.ndarray:
        """Mean activation of each latent over all tokens (zeros included), (d_sae,) float64."""
        return self.sum_F() / max(self.n_tokens, 1)

    def sq_norm_N(self) -> np.ndarray:
        """Squared L2 norm of each token's code, (N,) float64."""
        v = self.values.astype(np.float64)
        return np.bincount(self.token_ids(), weights=v * v, minlength=self.n_tokens)


def _rows(acts_ND: Any, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of a numpy array, torch tensor or h5py dataset, as a CPU/torch tensor."""
    if isinstance(acts_ND, torch.Tensor):
        return acts_ND[start:stop]
    return torch.from_numpy(np.ascontiguousarray(acts_ND[start:stop]))


def encode(sae: SAE, acts_ND: np.ndarray | torch.Tensor, *, batch_size: int = 4096) -> SparseCodes:
    """Batched ``sae.encode`` under ``torch.inference_mode``; returns canonical CSR codes."""
    n = int(acts_ND.shape[0])
    d_sae = int(sae.cfg.d_sae)
    if acts_ND.ndim != 2 or int(acts_ND.shape[1]) != int(sae.cfg.d_in):
        raise ValueError(f"acts_ND must have shape (N, {sae.cfg.d_in}), got {tuple(acts_ND.shape)}")
    parts: list[SparseCodes] = []
    with torch.inference_mode():
        starts = range(0, n, batch_size)
        for start in progress(starts, desc="sae.encode", unit="batch", min_steps=2):
            x_BD = _rows(acts_ND, start, start + batch_size)
            z_BF = sae.encode(x_BD.to(device=sae.device, dtype=sae.dtype))
            rows, cols = torch.nonzero(z_BF, as_tuple=True)
            vals = z_BF[rows, cols].float().cpu().numpy()
            counts = torch.bincount(rows, minlength=z_BF.shape[0]).cpu().numpy()
            offsets = np.zeros(z_BF.shape[0] + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])
            parts.append(SparseCodes(cols.cpu().numpy().astype(np.int32), vals, offsets, d_sae))
    if not parts:
        return SparseCodes(np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(1, np.int64), d_sae)
    return SparseCodes.concatenate(parts)


def latent_density(codes: SparseCodes) -> np.ndarray:
    """Firing frequency of each latent (fraction of tokens it is non-zero on), (d_sae,) float64."""
    return codes.fire_count_F() / max(codes.n_tokens, 1)
