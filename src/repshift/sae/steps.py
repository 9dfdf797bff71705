"""Rule entry points of the SAE stage."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from repshift.formats import layout
from repshift.formats.atomic import atomic_dir, atomic_path
from repshift.formats.layout import layer_file
from repshift.formats.provenance import provenance
from repshift.runtime import step
from repshift.sae.encode import (
    _device,
    align_text_tokens,
    token_groups,
    transfer_rows,
    write_layer_codes,
    write_transfer_summary,
)

log = logging.getLogger(__name__)


@step
def fetch_sae(*, input, output, params, **_):
    """Fetch one pretrained SAE (sae-lens release + id) into a local folder (needs the hub once)."""
    from repshift.sae import load as sae_load

    sae_load.fetch_pretrained_sae(params["release"], params["sae_id"], output["sae"])


@step
def encode_sae(*, input, output, params, wildcards=None, **_):
    """Encode one model's token-level activations with each layer's SAE; transfer metrics per position kind."""
    from repshift.formats.activations_h5 import read_activations
    from repshift.sae import codes as sae_codes
    from repshift.sae import load as sae_load
    from repshift.sae import metrics as sae_metrics

    wc = wildcards or {}
    device = _device(params.get("device", "auto"))
    sae_dirs = {int(k): v for k, v in params["sae_dirs"].items()}
    tables = []
    with atomic_dir(output["codes"]) as tmp:
        for layer in tqdm(params["layers"], desc="encode_sae", unit="layer", mininterval=5):
            layer = int(layer)
            acts = read_activations(layer_file(input["acts"], layer))
            tok = acts.tokens()
            sae_path = Path(sae_dirs[layer])
            sae = sae_load.load_sae(sae_path, device=device)
            model = str(acts.attrs.get("model"))
            sae_load.check_sae_compat(sae, d_model=acts.d_model, layer=layer, model_name=model)
            codes = sae_codes.encode(sae, tok.acts_TD)
            metrics = {
                kind: sae_metrics.transfer_metrics(sae, tok.acts_TD[sel], codes.take(sel))
                for kind, sel in token_groups(tok, acts.modality).items()
            }
            rows = transfer_rows(
                metrics, sae=wc.get("sae", ""), model=model, dataset=wc.get("dataset", ""), layer=layer
            )
            attrs = {
                "layer": layer,
                "model": model,
                "sae_path": str(sae_path),
                "neuronpedia_id": sae_load.sae_neuronpedia_id(sae) or "",
                **provenance(params),
            }
            tables.append(
                write_layer_codes(
                    tmp,
                    layer,
                    codes,
                    tok,
                    example_id=acts.example_id,
                    modality=acts.modality,
                    attrs=attrs,
                    rows=rows,
                )
            )
        write_transfer_summary(tmp, tables)


@step
def compare_sae(*, input, output, params, wildcards=None, **_):
    """Shift between two models' SAE codes at every layer, on identical text tokens (ids asserted equal)."""
    from repshift.formats import codes_h5
    from repshift.sae import metrics as sae_metrics

    wc = wildcards or {}
    comp = params["comparison"]
    tables, latent_tables = [], []
    for layer in params["layers"]:
        layer = int(layer)
        pa = layout.codes_file(input["base"], layer)
        pb = layout.codes_file(input["adapted"], layer)
        base_codes, meta = codes_h5.read_codes(pa, load_pooled=False)
        adapted_codes, _ = codes_h5.read_codes(pb, load_pooled=False)
        index_a = codes_h5.read_token_index(pa)
        rows_a, rows_b = align_text_tokens(
            index_a,
            codes_h5.read_token_index(pb),
            base=comp["base"],
            adapted=comp["adapted"],
        )
        np_id = meta["attrs"].get("neuronpedia_id") or None
        codes_a, codes_b = base_codes.take(rows_a), adapted_codes.take(rows_b)
        metrics, latents = sae_metrics.shift_metrics(codes_a, codes_b, neuronpedia_id=np_id)
        example_T = np.searchsorted(index_a["offsets"], rows_a, side="right") - 1
        boot = sae_metrics.bootstrap_shift_intervals(
            codes_a,
            codes_b,
            example_T,
            n_boot=int(params.get("bootstrap", 200)),
            seed=int(params.get("seed", 0)),
        )
        n_examples = int(np.unique(example_T).size)
        common = {
            "comparison": wc.get("comparison", ""),
            "base": comp["base"],
            "adapted": comp["adapted"],
            "sae": comp["sae"],
            "dataset": comp["dataset"],
            "layer": layer,
        }
        tables.append(
            pd.DataFrame(
                [
                    {
                        **common,
                        "metric": k,
                        "value": float(v),
                        "lo": boot.get(k, (np.nan, np.nan))[0],
                        "hi": boot.get(k, (np.nan, np.nan))[1],
                        "n": n_examples,
                    }
                    for k, v in metrics.items()
                ]
            )
        )
        latent_tables.append(latents.assign(**common))
    with atomic_path(output["shift"]) as tmp:
        pd.concat(tables, ignore_index=True).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    with atomic_path(output["latents"]) as tmp:
        pd.concat(latent_tables, ignore_index=True).to_csv(tmp, sep="\t", index=False, float_format="%.6g")


@step
def spliced_loss(*, input, output, params, wildcards=None, **_):
    """CE loss with each layer's SAE reconstruction spliced into the model's own forward pass (text rows)."""
    from repshift.config import ModelSpec
    from repshift.formats import manifest as formats_manifest
    from repshift.models.adapter import load_adapter
    from repshift.sae import load as sae_load
    from repshift.sae import spliced as sae_spliced

    wc = wildcards or {}
    name = wc.get("model") or params.get("model") or "model"
    spec = ModelSpec.from_dict(name, params["spec"])
    ext, cfg = params["extraction"], params["spliced"]
    manifest, _ = formats_manifest.read_manifest(input["manifest"])
    texts = manifest.loc[manifest["modality"] == "text", "text"].astype(str).tolist()
    if not texts:
        raise ValueError(f"dataset {input['manifest']} has no text rows: spliced CE runs on text")
    texts = sae_spliced.sample_prompts(texts, cfg.get("max_prompts"), int(params.get("seed", 0)))
    location = spec.id if spec.source == "hub" else str(input["model"])
    adapter = load_adapter(spec, location=location, dtype=ext["dtype"], device=ext["device"])
    device = str(adapter.device)
    saes = {}
    for layer, path in sorted((int(k), v) for k, v in params["sae_dirs"].items()):
        sae = sae_load.load_sae(path, device=device)
        sae_load.check_sae_compat(sae, d_model=adapter.d_model, layer=layer, model_name=name)
        saes[layer] = sae
    ids = [adapter.text_ids(t, int(ext["max_tokens"]))[0] for t in texts]
    results = sae_spliced.spliced_ce(
        adapter, saes, ids, batch_size=int(cfg.get("batch_size", 8)), progress=True
    )
    table = sae_spliced.spliced_table(
        results,
        sae=wc.get("sae", ""),
        model=name,
        dataset=wc.get("dataset", ""),
        n_boot=int(params.get("bootstrap", 200)),
        seed=int(params.get("seed", 0)),
    )
    with atomic_path(output["tsv"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


log = logging.getLogger(__name__)


#: classifier settings an sae_features entry may set (defaults: repshift.probes.cv.ProbeSettings)
SETTING_KEYS = ("c_grid", "inner_folds", "seeds", "max_iter")


def _codes_file(codes_dir, layer) -> Path:
    return layout.codes_file(codes_dir, layer)


def _load_image_codes(codes_dir, layer):
    from repshift.formats import codes_h5
    from repshift.sae.class_features import image_token_codes

    path = _codes_file(codes_dir, layer)
    codes, meta = codes_h5.read_codes(path, load_pooled=False)
    return image_token_codes(codes, codes_h5.read_token_index(path)), meta["attrs"]


def _manifest_rows(manifest_path, example_id_E: np.ndarray) -> pd.DataFrame:
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
    from repshift.sae import class_features

    wc = wildcards or {}
    a = params["analysis"]
    layer = int(wc.get("layer", params.get("layer", 0)))
    x, attrs = _load_image_codes(input["codes"], layer)
    rows = _manifest_rows(input["manifest"], x.example_id_E)
    names = dict(zip(rows["label"].astype(int), rows["label_name"].astype(str), strict=True))
    top = class_features.image_top_k(class_features.pool_sum(x), int(a.get("top_k", 10)))
    table, dropped = class_features.class_features(
        top,
        rows["label"].to_numpy(dtype=np.int64),
        names,
        max_image_fraction=float(a.get("max_image_fraction", 0.1)),
        n_top=int(a.get("n_top", 10)),
        neuronpedia_id=attrs.get("neuronpedia_id") or None,
    )
    common = _sf_common(params, wc, layer)
    table = table.assign(**common, top_k=int(a.get("top_k", 10)), n_dropped=int(dropped.size))
    cols = list(common) + list(class_features.CLASS_FEATURE_COLUMNS) + ["top_k", "n_dropped"]
    with atomic_path(output["table"]) as tmp:
        table[cols].to_csv(tmp, sep="\t", index=False, float_format="%.6g")


@step
def sae_feature_probe(*, input, output, params, threads=1, wildcards=None, **_):
    """Classify the dataset's classes from pooled SAE features (each pooling, raw and binarised) and from the
    raw pooled activations of the same rows, at every training fraction (macro-F1, accuracy)."""
    from repshift.formats.activations_h5 import read_activations
    from repshift.probes import cv as probes_cv
    from repshift.sae import class_features

    wc = wildcards or {}
    a = params["analysis"]
    layer = int(wc.get("layer", params.get("layer", 0)))
    # the analysis' own classifier settings (never probes.settings: a probe-stage change must not rerun this)
    settings = {k: a[k] for k in SETTING_KEYS if k in a}
    settings = probes_cv.ProbeSettings.from_dict({**settings, "n_jobs": int(threads)})
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
    table = class_features.evaluate_feature_sets(
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
    table = table.assign(**common)[list(common) + list(class_features.ROW_COLUMNS)]
    with atomic_path(output["results"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


# -- SAEs trained on the VLM itself (sae_training) -----------------------------------------------------------
@step
def train_vlm_sae(*, input, output, params, wildcards=None, **_):
    """Train one layer's SAE on the model's own residual stream (streamed, mixed, shuffled; sae-lens trainer)."""
    from repshift.config import ModelSpec
    from repshift.formats import manifest as formats_manifest
    from repshift.models.adapter import load_adapter
    from repshift.sae import train as sae_train

    wc = wildcards or {}
    name = wc.get("model") or params["model"]
    layer = int(wc.get("layer", params.get("layer", 0)))
    spec = ModelSpec.from_dict(name, params["spec"])
    tr = params["training"]
    tspec = sae_train.TrainSpec.from_dict({**tr["train"], "seed": int(params.get("seed", 0))})
    ext = params["extraction"]
    manifest, _ = formats_manifest.read_manifest(input["manifest"])
    rows = manifest[~manifest["fold"].isin(tr["heldout_folds"])].reset_index(drop=True)
    location = spec.id if spec.source == "hub" else str(input["model"])
    adapter = load_adapter(spec, location=location, dtype=ext["dtype"], device=ext["device"])
    source = sae_train.model_batches(
        adapter, rows, layer, image_dir=input.get("images") or None, batch_size=ext["batch_size"],
        max_tokens=ext["max_tokens"], seed=tspec.seed, kinds=[k for k, v in tspec.token_mix.items() if v > 0],
    )  # fmt: skip
    batches = sae_train.mixed_stream(source, tspec, chunk=min(1024, tspec.batch_size))
    sae, scale, curve = sae_train.fit_sae(
        batches, tspec, d_in=adapter.d_model, layer=layer, model_name=name, device=str(adapter.device)
    )
    info = {
        "layer": layer,
        "model": name,
        "input_scale": scale,
        "train": tspec.to_dict(),
        **provenance(params),
    }
    sae_train.save_trained_sae(sae, output["sae"], info=info)
    sae_train.write_curve(curve.assign(model=name, layer=layer), output["curve"])


@step
def evaluate_vlm_sae(*, input, output, params, wildcards=None, **_):
    """The trained SAE beside the base model's on held-out tokens: metrics by modality, spliced CE, dictionary
    match, modality sharing and k-sparse probes (one pass of the model)."""
    from repshift.config import ModelSpec
    from repshift.formats import manifest as formats_manifest
    from repshift.models.adapter import load_adapter
    from repshift.probes.cv import ProbeSettings
    from repshift.probes.sparse import sparse_probe_table
    from repshift.sae import compare as sae_compare
    from repshift.sae import evaluate_vlm as ev
    from repshift.sae import load as sae_load

    wc = wildcards or {}
    name, layer = wc.get("model") or params["model"], int(wc.get("layer", params.get("layer", 0)))
    spec = ModelSpec.from_dict(name, params["spec"])
    tr, ext = params["training"], params["extraction"]
    manifest, _ = formats_manifest.read_manifest(input["manifest"])
    location = spec.id if spec.source == "hub" else str(input["model"])
    adapter = load_adapter(spec, location=location, dtype=ext["dtype"], device=ext["device"])
    saes = {"trained": sae_load.load_sae(input["sae"]), "base": sae_load.load_sae(params["base_sae_dir"])}
    per_row = ev.encode_rows(
        adapter, manifest, layer, image_dir=input.get("images") or None, batch_size=ext["batch_size"],
        max_tokens=ext["max_tokens"],
    )  # fmt: skip
    held = manifest["fold"].isin(tr["heldout_folds"]).to_numpy()
    tokens = _kind_tokens([r for r, h in zip(per_row, held, strict=True) if h], adapter.d_model)
    common = {"model": name, "layer": layer}
    ce = ev.spliced_ce_by_span(
        adapter,
        saes,
        manifest[held],
        layer,
        image_dir=input.get("images") or None,
        batch_size=ext["batch_size"],
    )
    _write_tsv(
        pd.concat([ev.modality_metric_rows(saes, tokens), ev.ce_rows(ce)]).assign(**common), output["eval"]
    )
    W = {k: s.W_dec.detach().float().cpu().numpy() for k, s in saes.items()}
    metrics, _ = sae_compare.compare_dictionaries(
        W["trained"],
        W["base"],
        thresholds=tr["compare"]["thresholds"],
        max_latents=tr["compare"]["max_latents"],
    )
    codes = {k: s.encode(tokens["caption"]).detach().float().numpy() for k, s in saes.items()}
    corr = sae_compare.code_correlation(codes["trained"], codes["base"])
    metrics["code_corr_mean"] = float(np.nanmean(corr)) if np.isfinite(corr).any() else float("nan")
    _write_tsv(
        pd.DataFrame([{**common, "metric": k, "value": v} for k, v in metrics.items()]), output["compare"]
    )
    _write_tsv(
        _sharing_rows(saes["trained"], manifest, per_row, tr["sharing"]).assign(**common), output["sharing"]
    )
    pooled = _pooled(saes["trained"], per_row, adapter.d_model)
    settings = ProbeSettings.from_dict(tr["sparse_probes"]["settings"])
    tables = []
    for modality in ("image", "text"):
        m = (manifest["modality"] == modality).to_numpy()
        if m.sum() < 4 or manifest.loc[m, "label"].nunique() < 2:
            continue
        t = sparse_probe_table(
            pooled["codes"][m], pooled["acts"][m], manifest.loc[m, "label"].to_numpy(),
            manifest.loc[m, "fold"].to_numpy(), ks=tr["sparse_probes"]["k"], settings=settings,
        )  # fmt: skip
        tables.append(t.assign(modality=modality))
    _write_tsv(pd.concat(tables, ignore_index=True).assign(**common), output["sparse"])


def _write_tsv(df: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def _kind_tokens(per_row, d: int):
    import torch

    out = {}
    for kind in ("image", "prompt", "caption"):
        parts = [r[kind] for r in per_row if kind in r]
        out[kind] = torch.cat(parts) if parts else torch.zeros(0, d)
    return out


def _pooled(sae, per_row, d: int) -> dict[str, np.ndarray]:
    """Per row: mean over its image tokens (image rows) or caption tokens (text rows) of codes and activations."""
    import torch

    codes, acts = [], []
    with torch.no_grad():
        for r in per_row:
            x = r.get("image", r.get("caption", torch.zeros(1, d)))
            acts.append(x.mean(0).numpy())
            codes.append(sae.encode(x).float().mean(0).numpy())
    return {"codes": np.stack(codes), "acts": np.stack(acts)}


def _sharing_rows(sae, manifest: pd.DataFrame, per_row, thresholds) -> pd.DataFrame:
    """Modality sharing over pairs (image row, caption row with the same pair_id)."""
    import torch

    from repshift.sae import sharing

    d_sae = int(sae.cfg.d_sae)
    mass_i, mass_t, n_i, n_t = np.zeros(d_sae), np.zeros(d_sae), 0, 0
    act_i, act_t = [], []
    by_pair: dict = {}
    for i, row in manifest.iterrows():
        by_pair.setdefault(row.get("pair_id", row["group"]), {}).setdefault(row["modality"], i)
    with torch.no_grad():
        for pair in by_pair.values():
            if "image" not in pair or "text" not in pair:
                continue
            zi = sae.encode(per_row[pair["image"]]["image"]).float().numpy()
            zt = sae.encode(per_row[pair["text"]]["caption"]).float().numpy()
            mass_i, mass_t, n_i, n_t = mass_i + zi.sum(0), mass_t + zt.sum(0), n_i + len(zi), n_t + len(zt)
            act_i.append((zi > 0).any(0))
            act_t.append((zt > 0).any(0))
    if not act_i:
        raise ValueError("modality sharing needs paired image/caption rows (a dataset with modality: paired)")
    metrics, _ = sharing.sharing_summary(
        mass_i, n_i, mass_t, n_t, np.array(act_i), np.array(act_t), thresholds=thresholds
    )
    return pd.DataFrame([{"metric": k, "value": v} for k, v in metrics.items()])
