"""sae_feature_probe and class_features inputs: image-token codes of a layer, their manifest rows, and the
classification table from pooled SAE features beside the raw pooled activations of the same rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from repshift.formats import layout


def load_image_codes(codes_dir, layer: int):
    """A layer's image-token codes (:class:`repshift.sae.class_features.ImageTokenCodes`) and the file's attrs."""
    from repshift.formats import codes_h5
    from repshift.sae.class_features import image_token_codes

    path = layout.codes_file(codes_dir, layer)
    codes, meta = codes_h5.read_codes(path, load_pooled=False)
    return image_token_codes(codes, codes_h5.read_token_index(path)), meta["attrs"]


def manifest_rows(manifest_path, example_id_E: np.ndarray) -> pd.DataFrame:
    """The manifest rows of these example ids, in this order (raises naming a missing id)."""
    from repshift.formats.manifest import read_manifest

    df, _ = read_manifest(manifest_path)
    df = df.set_index(df["example_id"].astype(str))
    missing = [e for e in example_id_E if e not in df.index]
    if missing:
        raise ValueError(
            f"{len(missing)} example(s) of the codes are not in {manifest_path} (e.g. {missing[0]!r}); "
            "the codes are stale: rerun extraction and encoding"
        )
    return df.loc[list(example_id_E)]


def activation_rows(acts_example_id: np.ndarray, example_id_E: np.ndarray) -> np.ndarray:
    """Row index into the activation file of each example of the codes (raises naming a missing one)."""
    where = {e: i for i, e in enumerate(acts_example_id)}
    missing = [e for e in example_id_E if e not in where]
    if missing:
        raise ValueError(
            f"{len(missing)} image rows of the codes are not in the activations (e.g. {missing[0]})"
        )
    return np.array([where[e] for e in example_id_E], dtype=np.int64)


def feature_probe_table(
    codes_dir, acts_dir, manifest_path, layer: int, analysis: Mapping[str, Any], settings
) -> pd.DataFrame:
    """Classify the dataset's classes from pooled SAE features (each pooling, raw and binarised) and from the raw
    pooled activations of the same rows, at every training fraction. ``analysis``: the ``sae_features`` entry;
    ``settings``: its :class:`repshift.probes.cv.ProbeSettings`. Returns :data:`class_features.ROW_COLUMNS` rows."""
    from repshift.formats.activations_h5 import read_activations
    from repshift.sae import class_features

    a = analysis
    x, _ = load_image_codes(codes_dir, layer)
    rows = manifest_rows(manifest_path, x.example_id_E)
    acts = read_activations(layout.layer_file(acts_dir, layer))
    act_rows = activation_rows(acts.example_id, x.example_id_E)
    features = class_features.feature_sets(
        x,
        poolings=a.get("poolings", list(class_features.POOLINGS)),
        top_n=a.get("top_n", [1, 5]),
        binarise_variants=a.get("binarise", [False, True]),
        scaling=a.get("scaling", "global"),
    )
    features[class_features.RAW] = class_features.FeatureSet(
        "mean", False, acts.pooled("mean", act_rows), "std"
    )
    return class_features.evaluate_feature_sets(
        features,
        rows["label"].to_numpy(dtype=np.int64),
        settings=settings,
        train_fractions=a.get("train_fractions", [0.1, 0.2, 0.3, 0.4, 0.5]),
        folds_N=rows["fold"].to_numpy(dtype=np.int64),
        split_N=rows["split"].to_numpy() if "split" in rows.columns else None,
        groups_N=rows["group"].to_numpy(dtype=np.int64),
        outer_folds=a.get("outer_folds"),
    )
