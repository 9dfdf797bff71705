"""Steps of the probe stage: probe training and evaluation."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from repshift.atomic import atomic_dir, atomic_path
from repshift.steps._base import layer_file, step

log = logging.getLogger(__name__)


def _align(ids_a: np.ndarray, ids_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices into a and b of the ids they share, in a's order."""
    where = {e: j for j, e in enumerate(ids_b)}
    ia = np.array([i for i, e in enumerate(ids_a) if e in where], dtype=np.int64)
    ib = np.array([where[ids_a[i]] for i in ia], dtype=np.int64)
    return ia, ib


def _pair_rows(acts) -> tuple[np.ndarray, np.ndarray]:
    """Text and image rows of the same images (paired dataset), aligned by base image (group)."""
    text = np.flatnonzero(acts.modality == "text")
    image = np.flatnonzero(acts.modality == "image")
    first_text = {}
    for i in text:
        first_text.setdefault(int(acts.group[i]), i)
    ti = np.array(
        [first_text[int(acts.group[j])] for j in image if int(acts.group[j]) in first_text], dtype=np.int64
    )
    ii = np.array([j for j in image if int(acts.group[j]) in first_text], dtype=np.int64)
    return ti, ii


@step
def train_probe(*, input, output, params, threads=1, wildcards=None, **_):
    """Within-model, cross-model and cross-modal probes of one task at one layer, with controls."""
    from repshift import probes
    from repshift.h5io import read_activations

    wc = wildcards or {}
    task = params["task"]
    layer = int(wc.get("layer", params.get("layer", 0)))
    settings = probes.ProbeSettings.from_dict({**params.get("settings", {}), "n_jobs": int(threads)})
    pooling = task.get("pooling", "mean")
    acts = {m: read_activations(layer_file(path, layer)) for m, path in input.items()}
    weights = Path(output["weights"])
    frames = []
    fitted = {}

    def record(df, **info):
        frames.append(df.assign(**info))

    target = task.get("target", "label")
    with atomic_dir(weights) as wdir:
        for m in task["models"] if target == "modality" else []:
            # modality probe: caption rows vs image rows of the same images (same semantics, same folds)
            a = acts[m]
            y = (a.modality == "image").astype(np.int64)
            if len(np.unique(y)) < 2:
                raise ValueError(
                    f"{m}: the modality probe needs caption and image rows (a paired dataset on a VLM)"
                )
            X = a.pooled(pooling)
            df = probes.run_probe_suite(X, y, a.fold, settings=settings, groups_N=a.group)
            record(
                df,
                transfer="within",
                train_model=m,
                test_model=m,
                train_modality="text+image",
                test_modality="text+image",
            )
            probes.fit_final_probe(X, y, settings=settings, groups_N=a.group).save(wdir / f"{m}.modality")
        for m in task["models"] if target == "label" else []:
            a = acts[m]
            for modality in ("text", "image"):
                rows = np.flatnonzero(a.modality == modality)
                if not len(rows):
                    continue
                X, y = a.pooled(pooling, rows), a.label[rows]
                df = probes.run_probe_suite(X, y, a.fold[rows], settings=settings, groups_N=a.group[rows])
                record(
                    df,
                    transfer="within",
                    train_model=m,
                    test_model=m,
                    train_modality=modality,
                    test_modality=modality,
                )
                probe = probes.fit_final_probe(X, y, settings=settings, groups_N=a.group[rows])
                probe.save(wdir / f"{m}.{modality}")
                fitted[(m, modality)] = probe
        for a_name, b_name in task.get("cross_model", []) if target == "label" else []:
            a, b = acts[a_name], acts[b_name]
            ia, ib = _align(a.example_id, b.example_id)
            for modality in ("text", "image"):
                keep = a.modality[ia] == modality
                if not keep.any():
                    continue
                ra, rb = ia[keep], ib[keep]
                Xa, Xb = a.pooled(pooling, ra), b.pooled(pooling, rb)
                probes.check_same_width(Xa, Xb, name_a=a_name, name_b=b_name)
                df = probes.run_probe_suite(
                    Xa,
                    a.label[ra],
                    a.fold[ra],
                    settings=settings,
                    groups_N=a.group[ra],
                    X_test_ND=Xb,
                    y_test_N=b.label[rb],
                    names=(a_name, b_name),
                )
                record(
                    df[df["test_space"] == "other"],
                    transfer="cross-model",
                    train_model=a_name,
                    test_model=b_name,
                    train_modality=modality,
                    test_modality=modality,
                )
                if (a_name, modality) in fitted and (b_name, modality) in fitted:
                    cos = _direction_cosine(fitted[(a_name, modality)], fitted[(b_name, modality)])
                    record(
                        pd.DataFrame(
                            [
                                {
                                    "probe": "direction",
                                    "train_fraction": 1.0,
                                    "test_space": "other",
                                    "seed": -1,
                                    "fold": -1,
                                    "metric": "direction_cosine",
                                    "value": cos,
                                    "C": np.nan,
                                    "n_train": len(ra),
                                    "n_test": len(rb),
                                }
                            ]
                        ),
                        transfer="cross-model",
                        train_model=a_name,
                        test_model=b_name,
                        train_modality=modality,
                        test_modality=modality,
                    )
        for m in task.get("cross_modal", []) if target == "label" else []:
            a = acts[m]
            ti, ii = _pair_rows(a)
            if not len(ti):
                raise ValueError(f"{m}: no paired text/image rows for the cross-modal probe")
            Xt, Xi = a.pooled(pooling, ti), a.pooled(pooling, ii)
            for (src, Xs, rs), (dst, Xd, rd) in (
                ((("text", Xt, ti)), ("image", Xi, ii)),
                (("image", Xi, ii), ("text", Xt, ti)),
            ):
                df = probes.run_probe_suite(
                    Xs,
                    a.label[rs],
                    a.fold[rs],
                    settings=settings,
                    groups_N=a.group[rs],
                    X_test_ND=Xd,
                    y_test_N=a.label[rd],
                    names=(f"{m} {src}", f"{m} {dst}"),
                )
                record(
                    df[df["test_space"] == "other"],
                    transfer="cross-modal",
                    train_model=m,
                    test_model=m,
                    train_modality=src,
                    test_modality=dst,
                )
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "layer", layer)
    table.insert(0, "task", wc.get("task", ""))
    table["pooling"] = pooling
    table["target"] = target
    with atomic_path(output["results"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def _direction_cosine(pa, pb) -> float:
    """Cosine between two probes' directions; for multi-class probes the mean over classes."""
    from repshift import probes

    if pa.is_binary and pb.is_binary:
        return float(probes.direction_cosine(pa, pb))
    da, db = pa.directions_KD, pb.directions_KD
    num = (da * db).sum(1)
    den = np.linalg.norm(da, axis=1) * np.linalg.norm(db, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-12)))
