"""One probe task at one layer (within-model, cross-model, cross-modal and modality probes with their controls and
saved weights) and the layer x layer cross-modal scoring of its saved fold probes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from repshift.formats.layout import layer_file

log = logging.getLogger(__name__)

#: The modality probe's train/test modality: caption means vs image means of the same images differ in length,
#: position and token type, so this probe is at ceiling by construction; a sanity check, not a finding.
MODALITY_SANITY = "text vs image (sanity check)"


def probe_layer(acts, task, settings, wdir: Path) -> pd.DataFrame:
    """Rows of one task at one layer: each (model, modality) probe is fit once per (seed, outer fold) and scored
    in every space it transfers to (its own held-out rows, the other model's rows of the same inputs, the other
    modality's rows of the same images); the fold probes and a final probe per (model, modality) go to ``wdir``."""
    pooling = task.get("pooling", "mean")
    target = task.get("target", "label")
    if target == "modality":
        frames = _modality_probes(acts, task, settings, pooling, wdir)
    else:
        frames = _label_probes(acts, task, settings, pooling, wdir)
    return pd.concat(frames, ignore_index=True).assign(pooling=pooling, target=target)


def cross_layer_table(task, layers: list[int], weights_by_layer: dict[int, Path], acts_dirs: dict[str, str]):
    """Every cross-modal model's fold probes saved at each layer (captions, images) scored on the other modality's
    rows at every layer, without refitting, plus each direction's majority-class baseline (layer -1)."""
    from repshift.formats.activations_h5 import read_activations
    from repshift.probes import saved as probes_saved
    from repshift.probes import suite as probes_suite

    pooling = task.get("pooling", "mean")
    frames = []
    for m in task.get("cross_modal", []):
        acts = {j: read_activations(layer_file(acts_dirs[m], j)) for j in layers}
        for src, dst in (("text", "image"), ("image", "text")):
            fold_probes = {
                i: probes_saved.FoldProbes.load(weights_by_layer[i] / f"{m}.{src}.folds") for i in layers
            }
            tests = {}
            for j, a in acts.items():
                rows = np.flatnonzero(a.modality == dst)
                tests[j] = (a.pooled(pooling, rows), a.label[rows], a.fold[rows])
            df = probes_saved.cross_layer_scores(fold_probes, tests)
            # the majority-class baseline of this direction (labels and folds do not depend on the layer)
            a = acts[layers[0]]
            src_rows = np.flatnonzero(a.modality == src)
            X_dst, y_dst, folds_dst = tests[layers[0]]
            majority = probes_suite.majority_baseline(
                a.label[src_rows],
                a.fold[src_rows],
                groups_N=a.group[src_rows],
                test_spaces=(),
                other_spaces=[probes_suite.EvalSpace("other", X_dst, y_dst, folds_dst)],
            ).assign(train_layer=-1, test_layer=-1)
            frames.append(pd.concat([df, majority]).assign(model=m, train_modality=src, test_modality=dst))
            log.info("%s %s -> %s: %d x %d layers scored", m, src, dst, len(layers), len(layers))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _modality_probes(acts, task, settings, pooling, wdir) -> list[pd.DataFrame]:
    """Caption rows vs image rows of the same images (same semantics, same folds), per VLM."""
    from repshift.probes import saved as probes_saved
    from repshift.probes import suite as probes_suite

    frames = []
    for m in task["models"]:
        a = acts[m]
        y = (a.modality == "image").astype(np.int64)
        if len(np.unique(y)) < 2:
            raise ValueError(
                f"{m}: the modality probe needs caption and image rows (a paired dataset on a VLM)"
            )
        X = a.pooled(pooling)
        folds = a.repeat_folds(settings.repeats)
        df = probes_suite.run_probe_suite(X, y, folds, settings=settings, groups_N=a.group)
        frames.append(
            df.assign(
                transfer="within",
                train_model=m,
                test_model=m,
                train_modality=MODALITY_SANITY,
                test_modality=MODALITY_SANITY,
            )
        )
        probes_saved.fit_final_probe(X, y, settings=settings, groups_N=a.group).save(wdir / f"{m}.modality")
    return frames


def _rows_of(acts, m, modality) -> np.ndarray:
    return np.flatnonzero(acts[m].modality == modality)


def _transfer_plans(acts, task) -> dict[tuple[str, str], list[tuple[str, str, str, str]]]:
    """What each training (model, modality) is scored on besides its own held-out rows:
    (space name, transfer, test model, test modality)."""

    def rows_of(m, modality):
        return _rows_of(acts, m, modality)

    plans: dict[tuple[str, str], list[tuple[str, str, str, str]]] = {}
    for m in task["models"]:
        for modality in ("text", "image"):
            if rows_of(m, modality).size:
                plans.setdefault((m, modality), [])
    for a_name, b_name in task.get("cross_model", []):
        for modality in ("text", "image"):
            if rows_of(a_name, modality).size and rows_of(b_name, modality).size:
                plans.setdefault((a_name, modality), []).append((b_name, "cross-model", b_name, modality))
    for m in task.get("cross_modal", []):
        if not (rows_of(m, "text").size and rows_of(m, "image").size):
            raise ValueError(f"{m}: no paired text/image rows for the cross-modal probe")
        for src, dst in (("text", "image"), ("image", "text")):
            plans.setdefault((m, src), []).append((f"{m} {dst}", "cross-modal", m, dst))
    return plans


def _label_probes(acts, task, settings, pooling, wdir) -> list[pd.DataFrame]:
    """Label probes: one suite per training (model, modality), scored in every space it transfers to."""
    from repshift.probes import saved as probes_saved
    from repshift.probes import suite as probes_suite

    def rows_of(m, modality):
        return _rows_of(acts, m, modality)

    def space(m, modality, name):
        a, rows = acts[m], rows_of(m, modality)
        folds = a.repeat_folds(settings.repeats, rows)
        return probes_suite.EvalSpace(name, a.pooled(pooling, rows), a.label[rows], folds, a.group[rows])

    frames, final = [], {}
    for (m, modality), targets in _transfer_plans(acts, task).items():
        a, rows = acts[m], rows_of(m, modality)
        X, y = a.pooled(pooling, rows), a.label[rows]
        others = [space(test_model, test_modality, name) for name, _, test_model, test_modality in targets]
        folds = a.repeat_folds(settings.repeats, rows)
        df, fold_probes = probes_suite.fit_probe_suite(
            X, y, folds, settings=settings, groups_N=a.group[rows], other_spaces=others, names=(m, m)
        )
        fold_probes.save(wdir / f"{m}.{modality}.folds")
        info = {"train_model": m, "train_modality": modality}
        if m in task["models"]:
            within = df[df["test_space"] == "same"]
            frames.append(within.assign(transfer="within", test_model=m, test_modality=modality, **info))
            probe = probes_saved.fit_final_probe(X, y, settings=settings, groups_N=a.group[rows])
            probe.save(wdir / f"{m}.{modality}")
            final[(m, modality)] = probe
        for name, transfer, test_model, test_modality in targets:
            for suffix in ("", probes_suite.RECENTRED):  # as is, and re-centred on the target's training rows
                sub = df[df["test_space"] == name + suffix].assign(test_space="other" + suffix)
                frames.append(
                    sub.assign(transfer=transfer, test_model=test_model, test_modality=test_modality, **info)
                )
    for a_name, b_name in task.get("cross_model", []):
        for modality in ("text", "image"):
            if (a_name, modality) in final and (b_name, modality) in final:
                cos = _direction_cosine(final[(a_name, modality)], final[(b_name, modality)])
                frames.append(
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
                                "n_train": int(rows_of(a_name, modality).size),
                                "n_test": int(rows_of(b_name, modality).size),
                                "transfer": "cross-model",
                                "train_model": a_name,
                                "test_model": b_name,
                                "train_modality": modality,
                                "test_modality": modality,
                            }
                        ]
                    )
                )
    return frames


def _direction_cosine(pa, pb) -> float:
    """Cosine between two probes' directions; for multi-class probes the mean over classes."""
    from repshift.probes import saved as probes_saved

    if pa.is_binary and pb.is_binary:
        return float(probes_saved.direction_cosine(pa, pb))
    da, db = pa.directions_KD, pb.directions_KD
    num = (da * db).sum(1)
    den = np.linalg.norm(da, axis=1) * np.linalg.norm(db, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-12)))
