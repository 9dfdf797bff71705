"""How many SAE decoder rows a greedy sparse approximation (orthogonal matching pursuit) needs to reach a cosine
with a steering direction, against random directions of the same norm."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
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


def sparsity_table(dirs, W_dec_FD: np.ndarray | None, sparsity_cfg: Mapping | None, **key) -> pd.DataFrame:
    """Atoms of the SAE decoder OMP needs per direction and cosine (empty without an SAE).

    ``sparsity_cfg``: the steering ``sparsity`` settings (``max_atoms``, ``cosines``); ``key``: model, pair, layer.
    """
    from repshift.steering.directions import kind_of

    rows = []
    if W_dec_FD is not None:
        sp = {"max_atoms": 64, "cosines": [0.5, 0.7, 0.9], **(sparsity_cfg or {})}
        for name in dirs.names:
            path = omp_cosine_path(W_dec_FD, dirs[name], int(sp["max_atoms"]))
            for c in sp["cosines"]:
                rows.append(
                    {
                        **key,
                        "direction": name,
                        "kind": kind_of(name),
                        "cosine": c,
                        "atoms": atoms_to_reach(path, c),
                        "max_atoms": int(sp["max_atoms"]),
                        "best_cosine": float(path.max()),
                    }
                )
    cols = ["model", "pair", "layer", "direction", "kind", "cosine", "atoms", "max_atoms", "best_cosine"]
    return pd.DataFrame(rows, columns=cols)
