"""Steering directions per (model, layer, pair), as unit vectors in the layer's activation space.

Kinds: ``probe`` (the saved probe's target-minus-source readout mapped back through its scaler, ``w / scale``),
``mean-diff`` (target minus source class mean of the stored pooled activations, training rows only), ``sae`` (an
SAE decoder row: a configured class feature, else the latent with the largest class-mean code difference) and
``random-<i>`` controls (seeded Gaussian directions). Every direction is stored at unit norm: the edit's size is set
by ``alpha * ||h_L||`` at intervention time, so random controls have the same norm by construction.
Saved as ``<stem>.safetensors`` (``directions_KD``) + ``<stem>.json`` (names, meta, provenance); no pickle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from repshift.formats.atomic import atomic_path, write_json
from repshift.formats.provenance import provenance

DIRECTIONS_FORMAT = "repshift-steering-directions-v1"
#: direction kinds, in plotting order (random controls are named random-0, random-1, ...)
KINDS = ("probe", "mean-diff", "sae", "random")


def pair_labels(manifest_path: str | Path, pair: Mapping[str, str]) -> tuple[int, int]:
    """Integer labels of the pair's source and target class names in a dataset manifest."""
    from repshift.formats import manifest as formats_manifest

    df, _ = formats_manifest.read_manifest(manifest_path)
    labels = {str(k): int(v) for k, v in df.groupby("label_name")["label"].first().items()}
    missing = [pair[k] for k in ("source", "target") if pair[k] not in labels]
    if missing:
        raise ValueError(
            f"steering pair classes {missing} are not in {manifest_path} (classes: {sorted(labels)})"
        )
    return labels[pair["source"]], labels[pair["target"]]


def fold_probe(weights_dir: str | Path, model: str, modality: str, heldout: int):
    """The saved fold probes of (model, modality) and the index of the fit without fold ``heldout`` (lowest seed)."""
    from repshift.probes.saved import FoldProbes

    stem = Path(weights_dir) / f"{model}.{modality}.folds"
    fp = FoldProbes.load(stem)
    hits = [f for f in np.argsort(fp.seed_F, kind="stable") if fp.fold_F[f] == heldout]
    if not hits:
        raise ValueError(f"{stem}.json has no probe fit without fold {heldout}: check steering.heldout_fold")
    return fp, int(hits[0])


def kind_of(name: str) -> str:
    """``random`` for ``random-3``; the name itself otherwise."""
    return "random" if name.startswith("random-") else name


def unit(v_D: np.ndarray, what: str) -> np.ndarray:
    v = np.asarray(v_D, dtype=np.float64)
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0:
        raise ValueError(
            f"{what}: the direction has norm {n}; it cannot be normalised (are the classes identical?)"
        )
    return v / n


def probe_readout(coef_KD: np.ndarray, scale_D: np.ndarray, classes_K: np.ndarray, source: int, target: int):
    """``w_D`` in activation space with ``x . w_D + const`` = the probe's target-minus-source score.

    The probe scores ``((x - mean) / scale) @ coef.T``; so the activation-space weight is ``coef / scale``. A binary
    probe's single row points to ``classes_K[1]``; a multiclass probe's readout is row(target) - row(source).
    """
    classes = [int(c) for c in np.asarray(classes_K).tolist()]
    missing = [c for c in (source, target) if c not in classes]
    if missing:
        raise ValueError(
            f"the probe has classes {classes}; labels {missing} of the steering pair are not among them"
        )
    w_KD = np.asarray(coef_KD, dtype=np.float64) / np.asarray(scale_D, dtype=np.float64)
    if len(classes) == 2:
        sign = 1.0 if classes.index(target) == 1 else -1.0
        return sign * w_KD[0]
    return w_KD[classes.index(target)] - w_KD[classes.index(source)]


def class_mean_diff(X_ND: np.ndarray, y_N: np.ndarray, source: int, target: int) -> np.ndarray:
    """Target class mean minus source class mean of the rows of ``X_ND``."""
    X, y = np.asarray(X_ND, dtype=np.float64), np.asarray(y_N)
    for label in (source, target):
        if not (y == label).any():
            raise ValueError(f"no training row has label {label}: the class mean is undefined")
    return X[y == target].mean(0) - X[y == source].mean(0)


def largest_code_diff(codes_NF: np.ndarray, y_N: np.ndarray, source: int, target: int) -> int:
    """The latent whose mean code is most larger on target rows than on source rows."""
    return int(np.argmax(class_mean_diff(codes_NF, y_N, source, target)))


def random_directions(n: int, d: int, seed: int) -> np.ndarray:
    """``n`` seeded Gaussian directions of unit norm, shape ``(n, d)``."""
    g = np.random.default_rng(seed).standard_normal((n, d))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


@dataclass(frozen=True, eq=False)
class Directions:
    """Unit steering directions of one (model, layer, pair): row k of ``directions_KD`` is ``names[k]``."""

    names: tuple[str, ...]
    directions_KD: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.directions_KD.ndim != 2 or self.directions_KD.shape[0] != len(self.names):
            raise ValueError(f"{len(self.names)} names for directions of shape {self.directions_KD.shape}")
        norms = np.linalg.norm(self.directions_KD, axis=1)
        if not np.allclose(norms, 1.0, atol=1e-4):
            raise ValueError(f"steering directions must have unit norm, got norms {norms.round(4).tolist()}")

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.names:
            raise KeyError(f"no steering direction {name!r}; have {', '.join(self.names)}")
        return self.directions_KD[self.names.index(name)]

    def save(self, path_stem: str | Path) -> tuple[Path, Path]:
        weights, sidecar = Path(f"{path_stem}.safetensors"), Path(f"{path_stem}.json")
        with atomic_path(weights) as tmp:
            save_file({"directions_KD": np.ascontiguousarray(self.directions_KD, dtype=np.float32)}, tmp)
        header = {"format": DIRECTIONS_FORMAT, "weights": weights.name, "names": list(self.names)}
        write_json(sidecar, {**header, "meta": self.meta, "provenance": provenance(self.meta.get("params"))})
        return weights, sidecar

    @classmethod
    def load(cls, path_stem: str | Path) -> Directions:
        weights, sidecar = Path(f"{path_stem}.safetensors"), Path(f"{path_stem}.json")
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        if info.get("format") != DIRECTIONS_FORMAT:
            raise ValueError(f"{sidecar} is not a {DIRECTIONS_FORMAT} file (format {info.get('format')!r})")
        arr = load_file(weights)["directions_KD"].astype(np.float64)
        return cls(tuple(info["names"]), arr, info.get("meta", {}))


def build_directions(
    raw: Mapping[str, np.ndarray], *, n_random: int, seed: int, meta: Mapping[str, Any] | None = None
) -> Directions:
    """Normalise the raw directions (kind -> vector) and append ``n_random`` seeded random controls."""
    names: list[str] = []
    rows: list[np.ndarray] = []
    norms = {}
    for name, v in raw.items():
        norms[name] = float(np.linalg.norm(v))
        names.append(name)
        rows.append(unit(v, f"steering direction {name!r}"))
    if not rows:
        raise ValueError("no steering direction kind to build; steering.directions lists none")
    d = rows[0].shape[0]
    rand = random_directions(n_random, d, seed)
    names += [f"random-{i}" for i in range(n_random)]
    rows += list(rand)
    return Directions(tuple(names), np.stack(rows), {**dict(meta or {}), "raw_norms": norms})


def cosines(directions: Directions, kinds: Sequence[str] = ("probe", "mean-diff", "sae")) -> dict[str, float]:
    """Pairwise cosines between the non-random directions present (``probe~mean-diff``: ...)."""
    have = [k for k in kinds if k in directions.names]
    return {
        f"{a}~{b}": float(directions[a] @ directions[b]) for i, a in enumerate(have) for b in have[i + 1 :]
    }


def sae_direction(
    sae_dir,
    X_ND: np.ndarray,
    y_N: np.ndarray,
    source: int,
    target: int,
    target_name: str,
    class_features=None,
) -> tuple[np.ndarray, dict, np.ndarray]:
    """The SAE decoder row of the target class: the top latent of ``class_features`` (a class_features table)
    when given, else the latent with the largest class-mean code difference. Returns (row, meta, W_dec_FD)."""
    import pandas as pd
    import torch

    from repshift.sae.load import load_sae

    sae = load_sae(sae_dir)
    W_dec = sae.W_dec.detach().double().cpu().numpy()
    if class_features:
        table = pd.read_csv(class_features, sep="\t")
        top = table[(table["class"] == target_name)].sort_values("rank")
        if top.empty:
            raise ValueError(f"{class_features} lists no class feature of {target_name!r}")
        latent, how = int(top["latent"].iloc[0]), "class_features"
    else:
        with torch.no_grad():
            codes = sae.encode(torch.as_tensor(X_ND, dtype=torch.float32)).double().numpy()
        latent, how = largest_code_diff(codes, y_N, source, target), "largest class-mean code difference"
    return W_dec[latent], {"sae_latent": latent, "sae_latent_from": how}, W_dec


def fit_directions(
    acts_path,
    manifest_path,
    *,
    model: str,
    layer: int,
    pair: Mapping[str, str],
    kinds: Sequence[str],
    heldout: int,
    n_random: int,
    seed: int,
    probe_dir=None,
    sae_dir=None,
    class_features=None,
    params: Mapping[str, Any] | None = None,
) -> tuple[Directions, np.ndarray | None]:
    """fit_steering_directions: the requested kinds (probe, mean-diff, sae) from the training folds of one layer's
    pooled activations, normalised, with ``n_random`` controls seeded by ``seed + layer``; ``params`` is kept in
    the meta. Returns the directions and the SAE decoder (None without ``sae_dir``)."""
    from repshift.formats.activations_h5 import read_activations

    source, target = pair_labels(manifest_path, pair)
    acts = read_activations(acts_path)
    modality = "image" if (acts.modality == "image").any() else "text"
    train = np.flatnonzero((acts.modality == modality) & (acts.fold != heldout))
    X, y = acts.pooled("mean", train), acts.label[train]
    raw: dict[str, np.ndarray] = {}
    meta = {"model": model, "layer": layer, "modality": modality, "source": source, "target": target}
    meta |= {"heldout_fold": heldout, "n_train": int(train.size), "params": params}
    if "probe" in kinds:
        fp, f = fold_probe(probe_dir, model, modality, heldout)
        raw["probe"] = probe_readout(fp.coef_FKD[f], fp.scale_FD[f], fp.classes_K, source, target)
        meta |= {"probe_seed": int(fp.seed_F[f]), "probe_fold": heldout}
    if "mean-diff" in kinds:
        raw["mean-diff"] = class_mean_diff(X, y, source, target)
    W_dec = None
    if "sae" in kinds and sae_dir is not None:
        raw["sae"], info, W_dec = sae_direction(sae_dir, X, y, source, target, pair["target"], class_features)
        meta |= info
    dirs = build_directions(raw, n_random=n_random, seed=seed + layer, meta=meta)
    dirs.meta["cosines"] = cosines(dirs)
    if W_dec is None and sae_dir is not None:
        from repshift.sae.load import load_sae

        W_dec = load_sae(sae_dir).W_dec.detach().double().cpu().numpy()
    return dirs, W_dec
