"""Steps of the probe stage: probe training and evaluation."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from repshift.formats import layout
from repshift.formats.atomic import atomic_dir, atomic_path
from repshift.formats.layout import layer_file
from repshift.runtime import step

log = logging.getLogger(__name__)


#: The modality probe's train/test modality: caption means vs image means of the same images differ in length,
#: position and token type, so this probe is at ceiling by construction; a sanity check, not a finding.
MODALITY_SANITY = "text vs image (sanity check)"


@step
def train_probe(*, input, output, params, threads=1, wildcards=None, **_):
    """Within-model, cross-model and cross-modal probes of one task at one layer, with controls.

    Each (model, modality) probe is fit once per (seed, outer fold) and scored in every space it transfers to:
    its own held-out rows (within-model), the other model's rows of the same inputs (cross-model) and the other
    modality's rows of the same images (cross-modal). The fold probes are saved for later scoring (e.g. the
    layer x layer cross-modal matrix), and a final probe on all rows per (model, modality) for directions.
    """
    from repshift.formats.activations_h5 import read_activations
    from repshift.probes import cv as probes_cv

    wc = wildcards or {}
    task = params["task"]
    layer = int(wc.get("layer", params.get("layer", 0)))
    settings = probes_cv.ProbeSettings.from_dict({**params.get("settings", {}), "n_jobs": int(threads)})
    if settings.curve_layers and layer not in settings.curve_layers:
        settings = dataclasses.replace(settings, train_fractions=())
    pooling = task.get("pooling", "mean")
    acts = {m: read_activations(layer_file(path, layer)) for m, path in input.items()}
    weights = Path(output["weights"])
    frames = []
    target = task.get("target", "label")
    with atomic_dir(weights) as wdir:
        if target == "modality":
            frames += _modality_probes(acts, task, settings, pooling, wdir)
        else:
            frames += _label_probes(acts, task, settings, pooling, wdir)
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "layer", layer)
    table.insert(0, "task", wc.get("task", ""))
    table["pooling"] = pooling
    table["target"] = target
    with atomic_path(output["results"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


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


@step
def pixel_baseline(*, input, output, params, threads=1, wildcards=None, **_):
    """The attribute task's probe on trivial pixel statistics (mean luma, channel means and spreads, chroma,
    sharpness, black corners) of each variant as the model receives it, with the manifest's folds: the score an
    activation probe has to beat. Rows in train_probe's format (layer -1, model ``pixels``)."""
    from repshift.formats.manifest import read_manifest
    from repshift.probes import baselines
    from repshift.probes import cv as probes_cv

    df, meta = read_manifest(input["manifest"])
    spec = meta.get("spec", {})
    input_size = params.get("input_size", spec.get("input_size")) or baselines.DEFAULT_INPUT_SIZE
    image_dir = input.get("images") or meta.get("image_dir")
    if not image_dir:
        raise ValueError(f"pixel_baseline: no image folder for {input['manifest']} (pass input images)")
    settings = probes_cv.ProbeSettings.from_dict({**params.get("settings", {}), "n_jobs": int(threads)})
    table = baselines.pixel_baseline(df, image_dir, settings=settings, input_size=int(input_size))
    table.insert(0, "layer", -1)
    table.insert(0, "task", (wildcards or {}).get("task", ""))
    table = table.assign(
        transfer="within",
        test_model="pixels",
        test_modality="image",
        train_model="pixels",
        train_modality="image",
        pooling="pixel-statistics",
        target="label",
    )
    with atomic_path(output["results"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


@step
def score_cross_layer(*, input, output, params, wildcards=None, **_):
    """Layer x layer cross-modal transfer of one task: the fold probes train_probe saved at each layer (captions,
    images) scored on the other modality's rows at every layer, without refitting."""
    from repshift.formats.activations_h5 import read_activations
    from repshift.probes import saved as probes_saved
    from repshift.probes import suite as probes_suite

    task = params["task"]
    layers = [int(x) for x in params["layers"]]
    pooling = task.get("pooling", "mean")
    weights = input["weights"]
    weights = [weights] if isinstance(weights, str) else list(weights)
    by_layer = {layout.layer_of(w): Path(w) for w in weights}
    missing = sorted(set(layers) - set(by_layer))
    if missing:
        raise ValueError(f"no probe weights for layer(s) {missing}; expected folders named layer-<L>")
    frames = []
    for m in task.get("cross_modal", []):
        acts = {j: read_activations(layer_file(input[m], j)) for j in layers}
        for src, dst in (("text", "image"), ("image", "text")):
            fold_probes = {i: probes_saved.FoldProbes.load(by_layer[i] / f"{m}.{src}.folds") for i in layers}
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
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    table.insert(0, "task", (wildcards or {}).get("task", params.get("name", "")))
    with atomic_path(output["results"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


#: Columns that name one probe series in train_probe's tables (summarised separately).
SERIES_COLUMNS = (
    "task",
    "layer",
    "transfer",
    "train_model",
    "train_modality",
    "test_model",
    "test_modality",
    "pooling",
    "target",
)


def summarize_tables(table: pd.DataFrame, *, confidence: float = 0.95) -> pd.DataFrame:
    """:func:`repshift.probes.summary.summarize` per probe series (:data:`SERIES_COLUMNS`) of train_probe rows:
    mean, corrected interval over the distinct fold-runs, permutation-null band and p-value."""
    from repshift.probes.summary import summarize

    keys = [c for c in SERIES_COLUMNS if c in table]
    frames = []
    for key, sub in table[table["probe"] != "direction"].groupby(keys, sort=True, dropna=False):
        frames.append(summarize(sub, confidence=confidence).assign(**dict(zip(keys, key, strict=True))))
    if not frames:
        return pd.DataFrame(columns=keys)
    out = pd.concat(frames, ignore_index=True)
    return out[keys + [c for c in out.columns if c not in keys]]


@step
def summarize_probes(*, input, output, params, wildcards=None, **_):
    """One task's probe summary over every layer: per series, probe and metric the mean, the corrected 95%
    interval over repeats x folds fold-runs, and the permutation null (mean, 95% band, p-value)."""
    tables = input["tables"]
    tables = [tables] if isinstance(tables, str) else list(tables)
    frames = [pd.read_csv(t, sep="\t") for t in tables]
    summary = summarize_tables(pd.concat(frames, ignore_index=True))
    log.info("%d summary rows from %d probe tables", len(summary), len(tables))
    with atomic_path(output["summary"]) as tmp:
        summary.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
