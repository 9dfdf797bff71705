"""Steps of the SAE-feature analyses: class features, SAE-feature classification, and their figure."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from repshift.atomic import atomic_path
from repshift.steps._base import layer_file, step

log = logging.getLogger(__name__)

#: classifier settings an sae_features entry may set (defaults: repshift.probes.ProbeSettings)
SETTING_KEYS = ("c_grid", "inner_folds", "seeds", "max_iter")


def _codes_file(codes_dir, layer) -> Path:
    return Path(codes_dir) / f"layer-{int(layer)}.codes.h5"


def _load_image_codes(codes_dir, layer):
    from repshift import codes_h5
    from repshift.sae_features import image_token_codes

    path = _codes_file(codes_dir, layer)
    codes, meta = codes_h5.read_codes(path, load_pooled=False)
    return image_token_codes(codes, codes_h5.read_token_index(path)), meta["attrs"]


def _manifest_rows(manifest_path, example_id_E: np.ndarray) -> pd.DataFrame:
    """The manifest rows of these example ids, in this order (raises naming a missing id)."""
    from repshift.datasets import read_manifest

    df, _ = read_manifest(manifest_path)
    df = df.set_index(df["example_id"].astype(str))
    missing = [e for e in example_id_E if e not in df.index]
    if missing:
        raise ValueError(
            f"{len(missing)} example(s) of the codes are not in {manifest_path} (e.g. {missing[0]!r}); "
            "the codes are stale: rerun extraction and encoding"
        )
    return df.loc[list(example_id_E)]


def _sf_common(params, wildcards, layer) -> dict:
    a = params["analysis"]
    return {
        "analysis": (wildcards or {}).get("analysis", params.get("name", "")),
        "sae": a["sae"],
        "model": (wildcards or {}).get("model", ""),
        "dataset": a["dataset"],
        "layer": int(layer),
    }


@step
def class_features(*, input, output, params, wildcards=None, **_):
    """Per class, the SAE latents most often in its images' top-k sets, after dropping generic latents."""
    from repshift import sae_features as sf

    wc = wildcards or {}
    a = params["analysis"]
    layer = int(wc.get("layer", params.get("layer", 0)))
    x, attrs = _load_image_codes(input["codes"], layer)
    rows = _manifest_rows(input["manifest"], x.example_id_E)
    names = dict(zip(rows["label"].astype(int), rows["label_name"].astype(str), strict=True))
    top = sf.image_top_k(sf.pool_sum(x), int(a.get("top_k", 10)))
    table, dropped = sf.class_features(
        top,
        rows["label"].to_numpy(dtype=np.int64),
        names,
        max_image_fraction=float(a.get("max_image_fraction", 0.1)),
        n_top=int(a.get("n_top", 10)),
        neuronpedia_id=attrs.get("neuronpedia_id") or None,
    )
    common = _sf_common(params, wc, layer)
    table = table.assign(**common, top_k=int(a.get("top_k", 10)), n_dropped=int(dropped.size))
    cols = list(common) + list(sf.CLASS_FEATURE_COLUMNS) + ["top_k", "n_dropped"]
    with atomic_path(output["table"]) as tmp:
        table[cols].to_csv(tmp, sep="\t", index=False, float_format="%.6g")


@step
def sae_feature_probe(*, input, output, params, threads=1, wildcards=None, **_):
    """Classify the dataset's classes from pooled SAE features (each pooling, raw and binarised) and from the
    raw pooled activations of the same rows, at every training fraction (macro-F1, accuracy)."""
    from repshift import probes
    from repshift import sae_features as sf
    from repshift.h5io import read_activations

    wc = wildcards or {}
    a = params["analysis"]
    layer = int(wc.get("layer", params.get("layer", 0)))
    # the analysis' own classifier settings (never probes.settings: a probe-stage change must not rerun this)
    settings = {k: a[k] for k in SETTING_KEYS if k in a}
    settings = probes.ProbeSettings.from_dict({**settings, "n_jobs": int(threads)})
    x, _ = _load_image_codes(input["codes"], layer)
    rows = _manifest_rows(input["manifest"], x.example_id_E)
    acts = read_activations(layer_file(input["acts"], layer))
    where = {e: i for i, e in enumerate(acts.example_id)}
    missing = [e for e in x.example_id_E if e not in where]
    if missing:
        raise ValueError(
            f"{len(missing)} image rows of the codes are not in the activations (e.g. {missing[0]})"
        )
    act_rows = np.array([where[e] for e in x.example_id_E], dtype=np.int64)
    features = sf.feature_sets(
        x,
        poolings=a.get("poolings", list(sf.POOLINGS)),
        top_n=a.get("top_n", [1, 5]),
        binarise_variants=a.get("binarise", [False, True]),
        scaling=a.get("scaling", "global"),
    )
    features[sf.RAW] = sf.FeatureSet("mean", False, acts.pooled("mean", act_rows), "std")
    table = sf.evaluate_feature_sets(
        features,
        rows["label"].to_numpy(dtype=np.int64),
        settings=settings,
        train_fractions=a.get("train_fractions", [0.1, 0.2, 0.3, 0.4, 0.5]),
        folds_N=rows["fold"].to_numpy(dtype=np.int64),
        split_N=rows["split"].to_numpy() if "split" in rows.columns else None,
        groups_N=rows["group"].to_numpy(dtype=np.int64),
        outer_folds=a.get("outer_folds"),
    )
    common = _sf_common(params, wc, layer)
    table = table.assign(**common)[list(common) + list(sf.ROW_COLUMNS)]
    with atomic_path(output["results"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


@step
def plot_sae_features(*, input, output, params, **_):
    """Macro-F1 against training fraction per layer: SAE-feature variants beside raw activations (PDF, PNG, TSV)."""
    from repshift import sae_feature_figure as sff
    from repshift.figures import write_table

    value = input.get("probes", [])
    paths = [value] if isinstance(value, str) else list(value)
    frames = [pd.read_csv(p, sep="\t") for p in paths]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["analysis"])
    table = sff.figure_table(rows) if len(rows) else pd.DataFrame(columns=sff.FIGURE_COLUMNS)
    sff.plot_figure(table, out_pdf=output["pdf"], out_png=output["png"])
    write_table(table, output["tsv"])
