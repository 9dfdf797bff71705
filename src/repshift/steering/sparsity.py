"""How many SAE decoder rows a greedy sparse approximation (orthogonal matching pursuit) needs to reach a cosine
with a steering direction, against random directions of the same norm."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import orthogonal_mp


def omp_cosine_path(dictionary_FD: np.ndarray, v_D: np.ndarray, max_atoms: int) -> np.ndarray:
    """Cosine between ``v_D`` and its OMP approximation with 1, 2, ..., ``max_atoms`` decoder rows.

    The rows of ``dictionary_FD`` (an SAE's ``W_dec``) are normalised first (atoms of unit norm), as OMP assumes.
    Uses scikit-learn's ``orthogonal_mp`` (the solver of ``OrthogonalMatchingPursuit``) with ``return_path``: one
    greedy run gives every sparsity level. The path stops early when the residual vanishes; the last cosine is
    then carried to ``max_atoms``.
    """
    D = np.asarray(dictionary_FD, dtype=np.float64)
    atoms_DF = (D / np.clip(np.linalg.norm(D, axis=1, keepdims=True), 1e-12, None)).T
    v = np.asarray(v_D, dtype=np.float64)
    k = int(min(max_atoms, atoms_DF.shape[0], atoms_DF.shape[1]))
    coefs_FK = orthogonal_mp(atoms_DF, v, n_nonzero_coefs=k, return_path=True)
    coefs_FK = coefs_FK.reshape(atoms_DF.shape[1], -1)
    approx_DK = atoms_DF @ coefs_FK
    cos_K = (approx_DK.T @ v) / (np.linalg.norm(approx_DK, axis=0) * np.linalg.norm(v) + 1e-300)
    out = np.full(max_atoms, cos_K[-1])
    out[: len(cos_K)] = cos_K
    return out


def atoms_to_reach(cos_path_K: np.ndarray, cosine: float) -> float:
    """Fewest atoms whose approximation reaches ``cosine`` (NaN when the path never does)."""
    hit = np.flatnonzero(np.asarray(cos_path_K) >= cosine - 1e-9)
    return float(hit[0] + 1) if hit.size else float("nan")
