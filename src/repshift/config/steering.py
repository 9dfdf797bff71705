"""Which steering jobs exist and what each reads: pure functions of the validated config (see rules/steering.smk)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from repshift.config import targets as T
from repshift.config.specs import model_spec
from repshift.formats import layout


def _s(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    return cfg.get("steering") or {}


def steering_jobs(cfg: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """``(model, pair, layer)`` of every steering job (none when steering.models or pairs is empty)."""
    s = _s(cfg)
    return [
        (m, p, int(L)) for m in s.get("models", []) for p in s.get("pairs", {}) for L in s.get("layers", [])
    ]


def readout_layers(cfg: Mapping[str, Any], layer: int) -> list[int]:
    """Layers whose saved probes read the edit out (persistence): every probe layer of the task from ``layer`` on."""
    return [L for L in T.probe_layers(cfg, _s(cfg)["task"]) if L >= int(layer)]


def write_layers(cfg: Mapping[str, Any], model: str, layer: int) -> list[int]:
    """The write layer and its one-block-off controls that exist in ``model``."""
    n = model_spec(cfg, model).num_layers
    out = [int(layer)] + [int(layer) + o for o in _s(cfg).get("offsets", [-1, 1])]
    return [L for i, L in enumerate(out) if 0 <= L < n and L not in out[:i]]


def dataset(cfg: Mapping[str, Any]) -> str:
    return cfg["probes"]["tasks"][_s(cfg)["task"]]["dataset"]


def direction_inputs(cfg: Mapping[str, Any], model: str, layer: int | str) -> dict[str, str]:
    s, results = _s(cfg), cfg["paths"]["results"]
    out = {
        "manifest": T.manifest(cfg, dataset(cfg)),
        "acts": T.activations(cfg, model, dataset(cfg)),
        "probe": layout.probe_weights(results, s["task"], layer),
    }
    if s.get("sae"):
        # the demo's SAEs come from one job writing the whole family folder: depend on that folder
        sae = s["sae"]
        demo = cfg["saes"][sae]["source"] == "demo"
        out["sae"] = layout.sae_family_dir(cfg["paths"]["data"], sae) if demo else T.sae_dir(cfg, sae, layer)
    if s.get("class_features"):
        out["class_features"] = layout.sae_feature_table(
            results, s["class_features"], model, layer, "class_features"
        )
    return out


def sae_layer_dir(cfg: Mapping[str, Any], layer: int | str) -> str:
    """The folder of the steering SAE at ``layer`` ("" without one): what fit_steering_directions loads."""
    sae = _s(cfg).get("sae")
    return T.sae_dir(cfg, sae, layer) if sae else ""


def steer_inputs(cfg: Mapping[str, Any], model: str, pair: str, layer: int | str) -> dict[str, Any]:
    s, results = _s(cfg), cfg["paths"]["results"]
    stem = layout.steering_directions(results, model, pair, layer)
    return {
        "manifest": T.manifest(cfg, dataset(cfg)),
        "model": T.model_dir(cfg, model),
        "images": T.dataset_images(cfg, dataset(cfg)),
        "directions": f"{stem}.safetensors",
        "probes": [layout.probe_weights(results, s["task"], L) for L in readout_layers(cfg, int(layer))],
    }


def steer_params(cfg: Mapping[str, Any], model: str, pair: str, layer: int | str) -> dict[str, Any]:
    """Every value the steer_model step reads (so a change reruns exactly its jobs)."""
    s = _s(cfg)
    keys = (
        "alphas",
        "positions",
        "heldout_fold",
        "max_examples",
        "norm_examples",
        "batch_size",
        "question",
        "rollouts",
        "task",
    )
    return {
        **{k: s.get(k) for k in keys},
        "pair": dict(s["pairs"][pair]),
        "write_layers": write_layers(cfg, model, int(layer)),
        "readout_layers": readout_layers(cfg, int(layer)),
    }


def all_steering_tables(cfg: Mapping[str, Any], kind: str = "table") -> list[str]:
    """kind: table, rollouts or sparsity."""
    build = {
        "table": layout.steering_table,
        "rollouts": layout.steering_rollouts,
        "sparsity": layout.steering_sparsity,
    }[kind]
    return [build(cfg["paths"]["results"], *job) for job in steering_jobs(cfg)]


def steering_targets(cfg: Mapping[str, Any]) -> list[str]:
    """The steering figure and the rollouts table (for ``rule all``), or nothing when no steering job is configured."""
    results = cfg["paths"]["results"]
    if not steering_jobs(cfg):
        return []
    return [layout.figure(results, "steering"), layout.figure(results, "steering_rollouts", "html")]
