"""Class features and SAE-feature classification on image datasets (the LLaVA-Gemma / CIFAR-100 analyses).

Both analyses read the SAE codes of the **image tokens** of the **image rows** of one (sae, model, dataset,
layer) codes file (:mod:`repshift.codes_h5`): BOS, pads, specials and the prompt after the image are never used.
Write ``z_t`` for the code of image token ``t`` (sparse, non-negative for JumpReLU / ReLU SAEs) of an image.

**Class features** (:func:`class_features`)

1. Image score of latent ``l``: ``s_l = sum_t z_t[l]`` (the ``sum`` pooling below).
2. The image's *top-k set*: the ``top_k`` latents with the largest score among those with ``s_l > 0`` (fewer
   when fewer are active; ties go to the lower latent index).
3. Overall count of a latent: the number of images (all classes) whose top-k set holds it; its overall
   frequency is that count over the number of images. Latents with an overall frequency **above**
   ``max_image_fraction`` (default 0.1) are dropped as generic: with 10,000 images, 0.1 is the original rule
   "more than 1000 of 10000". A latent at exactly the threshold is kept.
4. Per class, the remaining latents are ranked by their frequency within the class (the share of the class's
   images whose top-k set holds them); ties go to the lower overall frequency (the more class-specific latent),
   then the lower index. The first ``n_top`` with a non-zero count are listed.

**SAE-feature classification** (:func:`evaluate_feature_sets`)

Pooling of an image's image-token codes into one vector over the SAE's latents:

* ``sum``: ``x_l = sum_t z_t[l]``, the summed activation;
* ``top{n}-count``: ``x_l = #{t : l is among the n largest entries of z_t}``, how many of the image's tokens
  have latent ``l`` in their top-n (ties: lower latent index; inactive latents never count);

each raw or binarised (``x_l > 0`` -> 1). Features stay ``scipy.sparse`` CSR matrices throughout.

The classifier is the one of :mod:`repshift.probes`: a scaler fit on the training rows, then L2 (multinomial)
logistic regression (lbfgs, which takes sparse input) with ``C`` chosen by inner cross-validation on the
training rows (log loss, warm-started path, ties to the smaller C).

**Scaling of sparse SAE features** (``scaling``; features stay sparse under each):

* ``global`` (default): one scalar for the whole matrix, the root-mean-square of the training rows' non-zero
  entries. Active entries get a typical magnitude of 1 (as standardised features have, so one C grid serves
  both), every latent keeps its SAE scale relative to the others, and binarised features stay 0/1.
* ``maxabs``: each latent divided by its largest absolute training value (binarised features unchanged).
* ``std``: each latent divided by its training-row standard deviation, not centred
  (``StandardScaler(with_mean=False)``). Because the intercept is not penalised, centring would only move the
  intercept, so this equals full standardisation (checked in the tests). It is *not* the default: it inflates
  rare latents (a latent active on one of n training rows gets values near sqrt(n)), which then dominate an
  L2 fit, and SAE codes have thousands of rare latents; on synthetic codes with one perfectly separating latent
  among rare noise latents it loses to ``global`` (see the tests).

Columns constant on the training rows (latents never active there) get weight 0 under each. The raw-activation
reference (pooled mean activations of the same rows, ``pooled/mean`` of the activation file) is standardised per
dimension (``std``), exactly as :mod:`repshift.probes` does, and otherwise goes through the same pipeline.

Splits: the dataset's released split when the manifest has a ``split`` column holding both ``train`` and
``test`` rows (test = the released test rows); otherwise the stored folds (fold k = test, the rest = the
training pool), optionally only the first ``outer_folds`` of them. A training fraction ``f`` fits on a
stratified subsample of the training pool: per class, ``max(2, round(f * n_class))`` of its training rows
(all of them when it has fewer), taken as the first rows of one seeded permutation per (seed, fold, class),
so that a larger fraction's training set contains the smaller one's. Test rows are never subsampled and never
used in fitting. Rows: one per feature set x fraction x seed x fold x metric (accuracy, macro_f1); summaries by
:func:`repshift.probes.summary.summarize` (corrected repeated-CV t intervals).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin

from repshift.sae.codes import SparseCodes
from repshift.sae.metrics import neuronpedia_url

log = logging.getLogger(__name__)

#: Pooling kinds of the config (``topn-count`` expands to one feature set per n of ``top_n``).
POOLINGS = ("sum", "topn-count")
#: Feature scalings (see the module docstring).
SCALINGS = ("global", "maxabs", "std")
#: Name of the raw-activation reference feature set.
RAW = "activations (mean)"
#: Columns of the class-features table.
CLASS_FEATURE_COLUMNS = (
    "class",
    "label",
    "rank",
    "latent",
    "frequency",
    "count",
    "n_class_images",
    "overall_frequency",
    "overall_count",
    "neuronpedia",
)
#: Columns of the classification rows (before the analysis / model / layer columns are added).
ROW_COLUMNS = (
    "features",
    "pooling",
    "binarised",
    "scaling",
    "split",
    "train_fraction",
    "seed",
    "fold",
    "metric",
    "value",
    "C",
    "n_train",
    "n_test",
)
METRICS = ("accuracy", "macro_f1")
_STREAM_SUBSAMPLE = 7


class FeatureSet(NamedTuple):
    """One feature matrix to classify from (rows aligned with the labels), and how it was made."""

    pooling: str
    binarised: bool
    X: Any  # scipy.sparse CSR or a dense array
    scaling: str = "global"


# ------------------------------------------------------------------------------------------ image tokens
@dataclass(frozen=True)
class ImageTokenCodes:
    """Codes of the image tokens of the image rows of one codes file: image ``e`` owns token rows
    ``offsets_E1[e]:offsets_E1[e+1]`` of ``codes``; ``rows_E`` are the images' rows in the file."""

    codes: SparseCodes
    offsets_E1: np.ndarray
    rows_E: np.ndarray
    example_id_E: np.ndarray

    @property
    def n_images(self) -> int:
        return int(self.rows_E.size)


def image_token_codes(codes: SparseCodes, token_index: Mapping[str, np.ndarray]) -> ImageTokenCodes:
    """Select the image-token codes of the image rows (``token_index`` from ``codes_h5.read_token_index``)."""
    from repshift.formats.activations_h5 import POSITION_KINDS

    offsets = np.asarray(token_index["offsets"], dtype=np.int64)
    kinds_T = np.asarray(token_index["kinds_T"])
    modality = np.asarray(token_index["modality"])
    if kinds_T.size != codes.n_tokens or offsets[-1] != codes.n_tokens:
        raise ValueError(
            f"token index ({kinds_T.size} tokens) does not match the codes ({codes.n_tokens} tokens)"
        )
    rows = np.flatnonzero(modality == "image")
    if rows.size == 0:
        raise ValueError("no image rows: class features and SAE-feature classification need image inputs")
    example_T = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    keep_T = (kinds_T == POSITION_KINDS["image"]) & np.isin(example_T, rows)
    sel = np.flatnonzero(keep_T)
    counts = np.bincount(example_T[sel], minlength=offsets.size - 1)[rows]
    empty = rows[counts == 0]
    if empty.size:
        raise ValueError(
            f"{empty.size} image row(s) have no image-token codes (e.g. {token_index['example_id'][empty[0]]}); "
            "was the model a VLM and were image tokens stored?"
        )
    offsets_E1 = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return ImageTokenCodes(
        codes=codes.take(sel),
        offsets_E1=offsets_E1,
        rows_E=rows,
        example_id_E=np.asarray(token_index["example_id"])[rows],
    )


# ------------------------------------------------------------------------------------------------- pooling
def row_top_n(indices: np.ndarray, values: np.ndarray, offsets: np.ndarray, n: int) -> np.ndarray:
    """Mask over stored entries: the ``n`` largest positive entries of each CSR row (ties: lower index)."""
    if n < 1:
        raise ValueError(f"top-n needs n >= 1, got {n}")
    offsets = np.asarray(offsets, dtype=np.int64)
    row = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    order = np.lexsort((indices, -np.asarray(values, dtype=np.float64), row))
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size) - offsets[row[order]]
    return (rank < n) & (np.asarray(values) > 0)


def _pool(x: ImageTokenCodes, data: np.ndarray, keep: np.ndarray | None = None) -> sparse.csr_matrix:
    c = x.codes
    image_T = np.repeat(np.arange(x.n_images), np.diff(x.offsets_E1))
    image_nnz = np.repeat(image_T, c.l0_N)
    latents = c.indices
    if keep is not None:
        image_nnz, latents, data = image_nnz[keep], latents[keep], data[keep]
    out = sparse.csr_matrix((data.astype(np.float64), (image_nnz, latents)), shape=(x.n_images, c.d_sae))
    out.sum_duplicates()
    out.eliminate_zeros()
    return out


def pool_sum(x: ImageTokenCodes) -> sparse.csr_matrix:
    """(images, d_sae) CSR: each latent's activation summed over the image's image tokens."""
    return _pool(x, x.codes.values)


def pool_topn_count(x: ImageTokenCodes, n: int) -> sparse.csr_matrix:
    """(images, d_sae) CSR: how many of the image's tokens have each latent among their ``n`` largest."""
    c = x.codes
    keep = row_top_n(c.indices, c.values, c.offsets, n)
    return _pool(x, np.ones(c.nnz), keep)


def binarise(X: sparse.csr_matrix) -> sparse.csr_matrix:
    """``X > 0`` as a 0/1 float CSR matrix."""
    out = (X > 0).astype(np.float64)
    return sparse.csr_matrix(out)


def feature_sets(
    x: ImageTokenCodes,
    *,
    poolings: Sequence[str] = POOLINGS,
    top_n: Sequence[int] = (1, 5),
    binarise_variants: Sequence[bool] = (False, True),
    scaling: str = "global",
) -> dict[str, FeatureSet]:
    """Every configured (pooling, binarisation) variant: ``{features name: FeatureSet}``.

    Names: ``sum``, ``top5-count``, and ``... >0`` for binarised variants.
    """
    unknown = [p for p in poolings if p not in POOLINGS]
    if unknown:
        raise ValueError(f"unknown pooling(s) {unknown}; use {list(POOLINGS)}")
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; use one of {SCALINGS}")
    pooled: dict[str, sparse.csr_matrix] = {}
    for p in poolings:
        if p == "sum":
            pooled["sum"] = pool_sum(x)
        else:
            for n in sorted(set(int(v) for v in top_n)):
                pooled[f"top{n}-count"] = pool_topn_count(x, n)
    out = {}
    for name, X in pooled.items():
        for b in binarise_variants:
            out[f"{name} >0" if b else name] = FeatureSet(name, bool(b), binarise(X) if b else X, scaling)
    return out


# ------------------------------------------------------------------------------------------ class features
def image_top_k(scores_EF: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """(images, d_sae) 0/1 CSR: membership of each image's top-k set (largest positive scores)."""
    X = sparse.csr_matrix(scores_EF)
    X.sort_indices()
    keep = row_top_n(X.indices, X.data, X.indptr, k)
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    return sparse.csr_matrix((np.ones(int(keep.sum())), (rows[keep], X.indices[keep])), shape=X.shape)


def class_features(
    top_EF: sparse.csr_matrix,
    labels_E: np.ndarray,
    label_names: Mapping[int, str] | Sequence[str],
    *,
    max_image_fraction: float = 0.1,
    n_top: int = 10,
    neuronpedia_id: str | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Per class, the latents most often in its images' top-k sets, after dropping generic latents.

    ``top_EF``: 0/1 top-k membership (:func:`image_top_k`). Returns the tidy table
    (:data:`CLASS_FEATURE_COLUMNS`) and the dropped latents (overall frequency > ``max_image_fraction``).
    """
    if not 0 < max_image_fraction <= 1:
        raise ValueError(f"max_image_fraction must lie in (0, 1], got {max_image_fraction}")
    if n_top < 1:
        raise ValueError(f"n_top must be >= 1, got {n_top}")
    M = sparse.csr_matrix(top_EF, dtype=np.float64)
    labels = np.asarray(labels_E)
    n_images = M.shape[0]
    if labels.shape != (n_images,):
        raise ValueError(f"labels_E must have shape ({n_images},), got {labels.shape}")
    overall_F = np.asarray(M.sum(axis=0)).ravel()
    overall_freq_F = overall_F / max(n_images, 1)
    dropped = np.flatnonzero(overall_freq_F > max_image_fraction)
    keep_F = np.ones(M.shape[1], dtype=bool)
    keep_F[dropped] = False
    names = dict(enumerate(label_names)) if not isinstance(label_names, Mapping) else dict(label_names)
    rows = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count_F = np.asarray(M[members].sum(axis=0)).ravel()
        cand = np.flatnonzero(keep_F & (count_F > 0))
        order = np.lexsort((cand, overall_freq_F[cand], -count_F[cand]))
        for rank, latent in enumerate(cand[order][:n_top], start=1):
            rows.append(
                {
                    "class": names.get(int(label), str(label)),
                    "label": int(label),
                    "rank": rank,
                    "latent": int(latent),
                    "frequency": count_F[latent] / members.size,
                    "count": int(count_F[latent]),
                    "n_class_images": int(members.size),
                    "overall_frequency": float(overall_freq_F[latent]),
                    "overall_count": int(overall_F[latent]),
                    "neuronpedia": neuronpedia_url(neuronpedia_id, int(latent)),
                }
            )
    log.info(
        "class features: %d images, %d classes, %d latents dropped (in the top-k set of > %.3g of all images)",
        n_images,
        np.unique(labels).size,
        dropped.size,
        max_image_fraction,
    )
    return pd.DataFrame(rows, columns=list(CLASS_FEATURE_COLUMNS)), dropped


# ----------------------------------------------------------------------------------------------- splits
def classification_splits(
    folds_N: np.ndarray,
    split_N: np.ndarray | None = None,
    *,
    groups_N: np.ndarray | None = None,
    outer_folds: int | None = None,
) -> tuple[str, list[tuple[int, np.ndarray, np.ndarray]]]:
    """``(kind, [(fold, train_idx, test_idx), ...])``: the released split when ``split_N`` holds both ``train``
    and ``test`` (kind ``released``, fold -1), else the stored folds (kind ``folds``), the first ``outer_folds``
    of them when given."""
    from repshift.probes.cv import outer_splits

    if split_N is not None:
        split = np.asarray(split_N).astype(str)
        if {"train", "test"} <= set(split.tolist()):
            return "released", [(-1, np.flatnonzero(split == "train"), np.flatnonzero(split == "test"))]
    splits = list(outer_splits(np.asarray(folds_N), groups_N))
    if outer_folds is not None:
        splits = splits[: int(outer_folds)]
    return "folds", splits


def subsample_train(
    train_idx: np.ndarray, y_N: np.ndarray, fraction: float, *, seed: int, fold: int
) -> np.ndarray:
    """Stratified, seeded, nested subsample of the training rows (sorted): per class
    ``max(2, round(fraction * n_class))`` rows (all when fewer), the first rows of one permutation per
    (seed, fold, class). Only ``train_idx`` rows are ever returned."""
    if not 0 < fraction <= 1:
        raise ValueError(f"train fraction must lie in (0, 1], got {fraction}")
    train_idx = np.asarray(train_idx)
    if fraction >= 1:
        return np.sort(train_idx)
    y = np.asarray(y_N)[train_idx]
    keep = []
    for label in np.unique(y):
        members = np.sort(train_idx[y == label])
        rng = np.random.default_rng([int(seed), int(fold) + 1, _STREAM_SUBSAMPLE, int(label)])
        n_keep = min(members.size, max(2, math.floor(fraction * members.size + 0.5)))
        keep.append(rng.permutation(members)[:n_keep])
    return np.sort(np.concatenate(keep))


# ------------------------------------------------------------------------------------------ classifier
class GlobalScaler(TransformerMixin, BaseEstimator):
    """Divide every entry by one scalar: the RMS of the training rows' non-zero entries (1 when there are none).
    Keeps sparse input sparse."""

    def fit(self, X, y=None):
        values = X.data if sparse.issparse(X) else np.asarray(X)[np.asarray(X) != 0]
        rms = float(np.sqrt(np.mean(np.square(values, dtype=np.float64)))) if values.size else 0.0
        self.scale_ = rms if rms > 0 else 1.0
        return self

    def transform(self, X):
        return X * (1.0 / self.scale_)


def make_scaler(scaling: str):
    from sklearn.preprocessing import MaxAbsScaler, StandardScaler

    if scaling == "global":
        return GlobalScaler()
    if scaling == "maxabs":
        return MaxAbsScaler()
    if scaling == "std":
        return StandardScaler(with_mean=False)
    raise ValueError(f"unknown scaling {scaling!r}; use one of {SCALINGS}")


def make_pipeline(C: float, *, max_iter: int, scaling: str = "global", warm_start: bool = False):
    """Scaler (``scaling``) + L2 logistic regression (lbfgs), as :func:`fit_classifier` fits it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline(
        [
            ("scaler", make_scaler(scaling)),
            ("clf", LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, warm_start=warm_start)),
        ]
    )


def fit_classifier(
    X, y_N: np.ndarray, *, settings, seed: int, groups_N: np.ndarray | None = None, scaling: str = "global"
):
    """C by inner CV on these rows, then a refit on all of them, through the probes' nested-CV engine
    (:func:`repshift.probes.cv.fit_probe_pipeline`, or its batched solver from
    :class:`~repshift.probes.cv.ProbeSettings` ``batched_min_size`` on) with this module's scaler for sparse codes. Returns
    ``(pipeline, C, n_convergence_warnings)``. Pass training rows only."""
    from repshift.probes.cv import fit_probe_pipeline, fit_probe_pipelines_batched, use_batched

    # all inner problems in one batched solve (16k latents x 100 classes: hours -> minutes)
    if use_batched(*X.shape, settings):
        ((pipe, info),), _ = fit_probe_pipelines_batched(
            X, y_N, settings=settings, seeds=[seed], groups_N=groups_N, scaler=lambda: make_scaler(scaling)
        )
    else:
        pipe, info = fit_probe_pipeline(
            X, y_N, settings=settings, seed=seed, groups_N=groups_N, scaler=lambda: make_scaler(scaling)
        )
    return pipe, float(info["C"]), int(info["n_convergence_warnings"])


def _evaluate_task(X, y, groups, tr, te, *, seed, fold, fraction, settings, scaling):
    from sklearn.metrics import accuracy_score, f1_score

    fit_idx = subsample_train(tr, y, fraction, seed=seed, fold=fold)
    pipe, C, n_conv = fit_classifier(
        X[fit_idx],
        y[fit_idx],
        settings=settings,
        seed=seed,
        groups_N=None if groups is None else groups[fit_idx],
        scaling=scaling,
    )
    pred = pipe.predict(X[te])
    values = {
        "accuracy": float(accuracy_score(y[te], pred)),
        "macro_f1": float(f1_score(y[te], pred, average="macro", zero_division=0)),
    }
    return [
        (fraction, seed, fold, m, v, C, int(fit_idx.size), int(te.size)) for m, v in values.items()
    ], n_conv


def evaluate_feature_sets(
    features: Mapping[str, FeatureSet],
    y_N: np.ndarray,
    *,
    settings,
    train_fractions: Sequence[float],
    folds_N: np.ndarray,
    split_N: np.ndarray | None = None,
    groups_N: np.ndarray | None = None,
    outer_folds: int | None = None,
) -> pd.DataFrame:
    """Classify ``y_N`` from every feature set (``{name: FeatureSet}``, X sparse or dense, rows aligned with
    ``y_N``) at every training fraction, over ``settings.seeds`` x splits; tidy rows
    (:data:`ROW_COLUMNS`). Parallel over (fraction, seed, fold) with ``settings.n_jobs`` workers."""
    from joblib import Parallel, delayed

    y = np.asarray(y_N)
    if np.unique(y).size < 2:
        raise ValueError("classification needs at least 2 classes")
    kind, splits = classification_splits(folds_N, split_N, groups_N=groups_N, outer_folds=outer_folds)
    fractions = sorted({float(f) for f in train_fractions})
    if not fractions:
        raise ValueError("train_fractions must list at least one fraction")
    out = []
    for name, fs in features.items():
        pooling, binarised, X, scaling = FeatureSet(*fs)
        X = sparse.csr_matrix(X, dtype=np.float64) if sparse.issparse(X) else np.asarray(X, dtype=np.float64)
        if X.shape[0] != y.size:
            raise ValueError(f"features {name!r} have {X.shape[0]} rows but there are {y.size} labels")
        results = Parallel(n_jobs=settings.n_jobs)(
            delayed(_evaluate_task)(
                X, y, groups_N, tr, te, seed=s, fold=k, fraction=f, settings=settings, scaling=scaling
            )
            for f in fractions
            for s in settings.seeds
            for k, tr, te in splits
        )
        n_conv = sum(c for _, c in results)
        if n_conv:
            log.warning("%s: %d fits hit max_iter=%d without converging", name, n_conv, settings.max_iter)
        frame = pd.DataFrame(
            [r for rows, _ in results for r in rows],
            columns=["train_fraction", "seed", "fold", "metric", "value", "C", "n_train", "n_test"],
        )
        frame.insert(0, "split", kind)
        frame.insert(0, "scaling", scaling)
        frame.insert(0, "binarised", bool(binarised))
        frame.insert(0, "pooling", pooling)
        frame.insert(0, "features", name)
        log.info(
            "%s: %d x %d features, mean macro-F1 %.3f",
            name,
            X.shape[0],
            X.shape[1],
            frame.loc[frame.metric == "macro_f1", "value"].mean(),
        )
        out.append(frame)
    return pd.concat(out, ignore_index=True)[list(ROW_COLUMNS)]


def summarize_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Per features x train_fraction x metric (and analysis / model / layer when present): mean and 95%
    interval over seeds x folds (:func:`repshift.probes.summary.summarize`)."""
    from repshift.probes.summary import summarize

    keys = [k for k in ("analysis", "sae", "model", "dataset", "layer") if k in rows.columns]
    parts = []
    for key, sub in rows.groupby(keys + ["features"], sort=True) if keys else rows.groupby(["features"]):
        s = summarize(sub.rename(columns={"features": "probe"}).assign(test_space="same"))
        s = s.rename(columns={"probe": "features"})
        info = dict(zip(keys + ["features"], key if isinstance(key, tuple) else (key,), strict=True))
        for k in keys:
            s[k] = info[k]
        first = sub.iloc[0]
        s["pooling"], s["binarised"], s["scaling"] = first["pooling"], first["binarised"], first["scaling"]
        parts.append(s)
    cols = keys + [
        "features",
        "pooling",
        "binarised",
        "scaling",
        "train_fraction",
        "metric",
        "mean",
        "ci_low",
        "ci_high",
    ]
    cols += ["n", "n_train", "n_test", "interval"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)
