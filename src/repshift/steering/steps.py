"""Rule entry points of the steering stage."""

from __future__ import annotations

import json
import logging
from pathlib import Path

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
    # mean ||h_L|| over the edited positions of the norm examples: an edit adds alpha * residual_norm * v
    "residual_norm",
]


@step
def fit_steering_directions(*, input, output, params, wildcards=None, **_):
    """Unit steering directions of one (model, pair, layer) and their sparsity in the SAE decoder basis."""
    from repshift.steering import directions as D
    from repshift.steering.sparsity import sparsity_table

    wc = wildcards or {}
    model, layer = wc["model"], int(wc["layer"])
    kinds = params["directions"]
    dirs, W_dec = D.fit_directions(
        layer_file(input["acts"], layer), input["manifest"], model=model, layer=layer, pair=params["pair"],
        kinds=kinds, heldout=int(params["heldout_fold"]), n_random=int(params["n_random"]), seed=int(params["seed"]),
        probe_dir=input["probe"] if "probe" in kinds else None,
        sae_dir=params["sae_dir"] if input.get("sae") else None,
        class_features=input.get("class_features"), params=params,
    )  # fmt: skip
    dirs.save(output["directions"].removesuffix(".safetensors"))
    table = sparsity_table(
        dirs, W_dec, params.get("sparsity"), model=model, pair=wc.get("pair", ""), layer=layer
    )
    with atomic_path(output["sparsity"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


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


@step
def table_steering_rollouts(*, input, output, **_):
    """Every steering job's greedy rollouts as one table for the report (HTML) and as TSV, unedited rows first."""
    from repshift.figures.steering_rollouts import write_rollout_table

    paths = input["rollouts"]
    paths = [paths] if isinstance(paths, str) else list(paths)
    write_rollout_table(paths, out_html=output["html"], out_tsv=output["tsv"])
