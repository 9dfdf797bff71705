"""Rule entry points of the steering stage."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from repshift.config import ModelSpec
from repshift.formats.atomic import atomic_path
from repshift.formats.layout import layer_file
from repshift.runtime import step

log = logging.getLogger(__name__)

TABLE_COLUMNS = [
    "model",
    "pair",
    "layer",
    "write_layer",
    "direction",
    "kind",
    "alpha",
    "measure",
    "readout_layer",
    "value",
    "ci_low",
    "ci_high",
    "n",
    "baseline",
]


def _sae_direction(
    input, sae_dir, model, layer, X_ND, y_N, source, target, target_name
) -> tuple[np.ndarray, dict, np.ndarray]:
    import torch

    from repshift.sae.load import load_sae

    sae = load_sae(sae_dir)
    W_dec = sae.W_dec.detach().double().cpu().numpy()
    if input.get("class_features"):
        table = pd.read_csv(input["class_features"], sep="\t")
        top = table[(table["class"] == target_name)].sort_values("rank")
        if top.empty:
            raise ValueError(f"{input['class_features']} lists no class feature of {target_name!r}")
        latent, how = int(top["latent"].iloc[0]), "class_features"
    else:
        from repshift.steering.directions import largest_code_diff

        with torch.no_grad():
            codes = sae.encode(torch.as_tensor(X_ND, dtype=torch.float32)).double().numpy()
        latent, how = largest_code_diff(codes, y_N, source, target), "largest class-mean code difference"
    return W_dec[latent], {"sae_latent": latent, "sae_latent_from": how}, W_dec


@step
def fit_steering_directions(*, input, output, params, wildcards=None, **_):
    """Unit steering directions of one (model, pair, layer) and their sparsity in the SAE decoder basis."""
    from repshift.formats.activations_h5 import read_activations
    from repshift.steering import directions as D

    wc = wildcards or {}
    model, layer, heldout = wc["model"], int(wc["layer"]), int(params["heldout_fold"])
    source, target = D.pair_labels(input["manifest"], params["pair"])
    acts = read_activations(layer_file(input["acts"], layer))
    modality = "image" if (acts.modality == "image").any() else "text"
    train = np.flatnonzero((acts.modality == modality) & (acts.fold != heldout))
    X, y = acts.pooled("mean", train), acts.label[train]
    raw, meta = (
        {},
        {
            "model": model,
            "layer": layer,
            "modality": modality,
            "source": source,
            "target": target,
            "heldout_fold": heldout,
            "n_train": int(train.size),
            "params": params,
        },
    )
    kinds = params["directions"]
    if "probe" in kinds:
        fp, f = D.fold_probe(input["probe"], model, modality, heldout)
        raw["probe"] = D.probe_readout(fp.coef_FKD[f], fp.scale_FD[f], fp.classes_K, source, target)
        meta |= {"probe_seed": int(fp.seed_F[f]), "probe_fold": heldout}
    if "mean-diff" in kinds:
        raw["mean-diff"] = D.class_mean_diff(X, y, source, target)
    W_dec = None
    if "sae" in kinds and input.get("sae"):
        raw["sae"], info, W_dec = _sae_direction(
            input, params["sae_dir"], model, layer, X, y, source, target, params["pair"]["target"]
        )
        meta |= info
    dirs = D.build_directions(
        raw, n_random=int(params["n_random"]), seed=int(params["seed"]) + layer, meta=meta
    )
    dirs.meta["cosines"] = D.cosines(dirs)
    dirs.save(output["directions"].removesuffix(".safetensors"))
    if W_dec is None and input.get("sae"):
        from repshift.sae.load import load_sae

        W_dec = load_sae(params["sae_dir"]).W_dec.detach().double().cpu().numpy()
    table = _sparsity_table(dirs, W_dec, params, model=model, pair=wc.get("pair", ""), layer=layer)
    with atomic_path(output["sparsity"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def _sparsity_table(dirs, W_dec, params, **key) -> pd.DataFrame:
    """Atoms of the SAE decoder OMP needs per direction and cosine (empty without an SAE)."""
    from repshift.steering import sparsity
    from repshift.steering.directions import kind_of

    rows = []
    if W_dec is not None:
        sp = {"max_atoms": 64, "cosines": [0.5, 0.7, 0.9], **(params.get("sparsity") or {})}
        for name in dirs.names:
            path = sparsity.omp_cosine_path(W_dec, dirs[name], int(sp["max_atoms"]))
            for c in sp["cosines"]:
                rows.append(
                    {
                        **key,
                        "direction": name,
                        "kind": kind_of(name),
                        "cosine": c,
                        "atoms": sparsity.atoms_to_reach(path, c),
                        "max_atoms": int(sp["max_atoms"]),
                        "best_cosine": float(path.max()),
                    }
                )
    cols = ["model", "pair", "layer", "direction", "kind", "cosine", "atoms", "max_atoms", "best_cosine"]
    return pd.DataFrame(rows, columns=cols)


@step
def steer_model(*, input, output, params, wildcards=None, **_):
    """Dose-response of every direction at one layer: efficacy, damage, persistence with intervals; rollouts."""
    from repshift.steering import run

    wc = wildcards or {}
    params = {**params.get("steering", {}), **{k: v for k, v in params.items() if k != "steering"}}
    params.setdefault("rollouts", {})
    name = wc.get("model") or params.get("model") or "model"
    spec = ModelSpec.from_dict(name, params["spec"])
    location = spec.id if spec.source == "hub" else str(input["model"])
    table, rollouts = run.steer_layer(
        spec, location, input=input, params=params, pair_name=wc.get("pair", "pair"), layer=int(wc["layer"])
    )
    with atomic_path(output["table"]) as tmp:
        table.reindex(columns=TABLE_COLUMNS).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    with atomic_path(output["rollouts"]) as tmp:
        Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in rollouts), encoding="utf-8")


@step
def plot_steering(*, input, output, params, **_):
    """Dose-response curves with bands, efficacy vs damage, the random-direction band (PDF, PNG, TSV)."""
    from repshift.figures import steering as fig

    tables = input["tables"]
    tables = [tables] if isinstance(tables, str) else list(tables)
    fig.plot_steering(tables, out_pdf=output["pdf"], out_png=output["png"], out_tsv=output["tsv"])
