"""One function per workflow rule: plain dicts of paths and values in, files out.

Each step is what a thin ``workflow_scripts/<rule>.py`` runs through :func:`repshift.runtime.run_rule`, what
``repshift step <name>`` runs from the command line, and what ``tests/rules`` calls directly. Steps hold no
science: they read inputs, call the tested modules, and write outputs atomically with provenance.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from repshift.atomic import atomic_dir, atomic_path, write_json
from repshift.config import ModelSpec
from repshift.provenance import provenance

log = logging.getLogger(__name__)

STEPS: dict[str, Callable[..., Any]] = {}


def step(fn: Callable[..., Any]) -> Callable[..., Any]:
    STEPS[fn.__name__] = fn
    return fn


def layer_file(acts_dir: str | Path, layer: int | str) -> Path:
    return Path(acts_dir) / f"layer-{int(layer)}.h5"


# --- data ---------------------------------------------------------------------------------------------
@step
def make_synthetic_coco(*, input, output, params, **_):
    """Generate the demo's synthetic COCO 2017-format dataset (images + instances + captions JSON)."""
    from repshift.demo_coco import make_synthetic_coco as make

    root = Path(params["root"])
    split = params["split"]
    staging = root.parent / f".{root.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    summary = make(
        staging,
        n_images=params["n_images"],
        seed=params["seed"],
        image_size=params["image_size"],
        split=split,
    )
    for key, src in (
        ("instances", f"annotations/instances_{split}.json"),
        ("captions", f"annotations/captions_{split}.json"),
    ):
        dest = Path(output[key])
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staging / src, dest)
    images = Path(output["images"])
    if images.exists():
        shutil.rmtree(images)
    shutil.move(staging / split, images)
    shutil.rmtree(staging, ignore_errors=True)
    log.info("synthetic COCO: %s", summary)


@step
def download_coco(*, input, output, params, **_):
    """Download, verify and unpack the official COCO 2017 annotations and images."""
    from repshift.download import COCO_CHECKSUMS, COCO_URLS, DownloadError, download, extract_archive

    root = Path(params["root"])
    split = params["split"]
    archives = root / "archives"
    for key, members in (("annotations_trainval2017", "annotations"), (split, split)):
        url = COCO_URLS[key]
        check = COCO_CHECKSUMS.get(key, {})
        try:
            zip_path = download(url, archives / Path(url).name, size=check.get("size"), md5=check.get("md5"))
        except DownloadError as err:
            raise DownloadError(
                f"{err}\nCOCO 2017 could not be downloaded from {url}. Without network access, point "
                "coco.source: path / coco.root at an existing copy, or run the offline demo preset (`make demo`)."
            ) from err
        target = root / members
        if not target.exists():
            extract_archive(zip_path, root, members_prefix=members)
    for key in ("instances", "captions", "images"):
        if not Path(output[key]).exists():
            raise FileNotFoundError(f"{output[key]} missing after extracting the COCO archives")


@step
def build_dataset(*, input, output, params, wildcards=None, **_):
    """Build one dataset manifest (TSV + JSON sidecar) from the COCO annotations."""
    from repshift import datasets

    out = Path(output["manifest"])
    if Path(output["meta"]) != datasets.sidecar_path(out):
        raise ValueError(f"meta output must be {datasets.sidecar_path(out)}, the manifest's sidecar")
    datasets.build_dataset(
        (wildcards or {}).get("dataset") or out.stem,
        params["spec"],
        annotations_dir=Path(input["instances"]).parent,
        image_dir=input["images"],
        out_tsv=out,
        seed=int(params["seed"]),
        split=params["split"],
    )


# --- models and activations ----------------------------------------------------------------------------
@step
def make_demo_model(*, input, output, params, wildcards=None, **_):
    """Generate a tiny random-weight demo model (Gemma2 LLM, or a VLM whose decoder copies the demo LLM)."""
    from repshift import demo_models

    spec = params["spec"]
    demo = dict(spec["demo"])
    arch = demo.pop("arch")
    out = Path(output["model"])
    if arch == "gemma2":
        kwargs = {"num_hidden_layers": spec["num_layers"]}
        if "hidden_size" in demo:
            kwargs["hidden_size"] = demo["hidden_size"]
        demo_models.build_demo_llm(out, seed=params["seed"], **kwargs)
    else:
        demo_models.build_demo_vlm(
            out,
            base_dir=input["base"],
            arch=arch,
            perturb_from=demo["perturb_from"],
            perturb_scale=demo.get("perturb_scale", 0.5),
            seed=params["seed"],
        )


@step
def extract_activations(*, input, output, params, wildcards=None, **_):
    """Extract every configured layer of one model on one dataset to one HDF5 file per layer."""
    from repshift import datasets
    from repshift.extract import extract_dataset, plan_rows
    from repshift.models import load_adapter
    from repshift.tokens import check_same_token_ids, load_tokenizer

    ext = params["extraction"]
    name = (wildcards or {}).get("model") or params.get("model") or "model"
    spec = ModelSpec.from_dict(name, params["spec"])
    layers = [int(x) for x in params["layers"]]
    spec.check_layers(layers)
    manifest, meta = datasets.read_manifest(input["manifest"])
    if manifest.empty:
        raise ValueError(f"dataset {input['manifest']} is empty: nothing to extract")
    if not spec.is_vlm and not (manifest["modality"] == "text").any():
        raise ValueError(f"{name} is a text-only model but dataset {input['manifest']} has only image rows")
    manifest = plan_rows(manifest, spec.is_vlm, spec.reads_text)
    shard, n_shards = (int(x) for x in params.get("shard", (0, 1)))
    if n_shards > 1:
        manifest = shard_rows(manifest, shard, n_shards)
    location = spec.id if spec.source == "hub" else str(input["model"])
    partners = params.get("token_partners") or {}
    if partners:  # a text-only comparison needs identical ids: checked on tokenizers, before the model loads
        texts = manifest.loc[manifest["modality"] == "text", "text"].astype(str).tolist()
        toks = {name: load_tokenizer(spec, location)}
        for other, p in partners.items():
            other_spec = ModelSpec.from_dict(other, p["spec"])
            toks[other] = load_tokenizer(other_spec, p["location"])
        n_checked = check_same_token_ids(texts, toks, max_tokens=ext["max_tokens"])
        log.info("token ids identical to %s on %d texts", sorted(partners), n_checked)
    adapter = load_adapter(spec, location=location, dtype=ext["dtype"], device=ext["device"])
    attrs = {
        "model_location": location,
        "model_revision": spec.revision if spec.source == "hub" else "",
        "dataset": Path(input["manifest"]).stem,
        "dataset_config_hash": meta.get("config_hash", ""),
        **provenance(params),
    }
    with atomic_dir(output["acts"]) as tmp:
        paths = {layer: layer_file(tmp, layer) for layer in layers}
        summary = extract_dataset(
            adapter,
            manifest,
            paths,
            image_dir=params["image_dir"],
            tokens=bool(params["tokens"]),
            batch_size=ext["batch_size"],
            max_tokens=ext["max_tokens"],
            store_dtype=ext["store_dtype"],
            attrs=attrs,
        )
        write_json(
            tmp / "extraction.json", {**summary, "layers": layers, "shard": [shard, n_shards], **attrs}
        )


def shard_rows(manifest: pd.DataFrame, shard: int, n_shards: int) -> pd.DataFrame:
    """Contiguous slice ``shard`` of ``n_shards`` of the rows a model sees (merging in shard order restores them)."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is not in 0..{n_shards - 1}")
    bounds = np.linspace(0, len(manifest), n_shards + 1).round().astype(int)
    return manifest.iloc[bounds[shard] : bounds[shard + 1]].reset_index(drop=True)


@step
def merge_activations(*, input, output, params, **_):
    """Merge one (model, dataset)'s extraction shards into the per-layer files of an unsharded extraction."""
    from repshift.h5io import merge_layer_files

    shards = [Path(p) for p in (input["shards"] if isinstance(input["shards"], list) else [input["shards"]])]
    with atomic_dir(output["acts"]) as tmp:
        for layer in params["layers"]:
            merge_layer_files([layer_file(s, layer) for s in shards], layer_file(tmp, layer))
        write_json(
            tmp / "extraction.json",
            {"merged_from": [str(s) for s in shards], "layers": params["layers"], **provenance(params)},
        )


# --- SAEs --------------------------------------------------------------------------------------------
@step
def fetch_sae(*, input, output, params, **_):
    """Fetch one pretrained SAE (sae-lens release + id) into a local folder (needs the hub once)."""
    from repshift import sae as sae_mod

    sae_mod.fetch_pretrained_sae(params["release"], params["sae_id"], output["sae"])


@step
def train_demo_sae(*, input, output, params, **_):
    """Fit the demo's tiny JumpReLU SAEs, one per layer, on the demo LLM's text-token activations."""
    from repshift import sae as sae_mod
    from repshift.h5io import read_activations

    train = params["train"]
    with atomic_dir(output["saes"]) as tmp:
        for layer in params["layers"]:
            acts = read_activations(layer_file(input["acts"], layer))
            tok = acts.tokens(np.flatnonzero(acts.modality == "text"))
            keep = tok.mask("text")  # BOS, pads and specials never enter SAE training
            sae_mod.train_demo_sae(
                tok.acts_TD[keep],
                tmp / f"layer-{int(layer)}",
                layer=int(layer),
                d_sae=int(train.get("d_sae", 256)),
                steps=int(train.get("steps", 300)),
                seed=int(params["seed"]),
                model_name=train["model"],
            )


def pooled_codes(codes, offsets_N1: np.ndarray, kinds_T: np.ndarray, modality_N: np.ndarray) -> np.ndarray:
    """Per-example mean code over its content tokens (text tokens for text rows, image tokens for image rows)."""
    from scipy import sparse

    from repshift.h5io import POSITION_KINDS

    n, t = len(offsets_N1) - 1, len(kinds_T)
    example_T = np.repeat(np.arange(n), np.diff(offsets_N1))
    want_T = np.where(modality_N[example_T] == "image", POSITION_KINDS["image"], POSITION_KINDS["text"])
    content_T = kinds_T == want_T
    counts_N = np.bincount(example_T[content_T], minlength=n)
    weights = content_T / np.maximum(counts_N[example_T], 1)
    select_NT = sparse.csr_matrix((weights, (example_T, np.arange(t))), shape=(n, t))
    codes_TF = sparse.csr_matrix((codes.values, codes.indices, codes.offsets), shape=(t, codes.d_sae))
    return np.asarray((select_NT @ codes_TF).todense(), dtype=np.float32)


@step
def encode_sae(*, input, output, params, wildcards=None, **_):
    """Encode one model's token-level activations with each layer's SAE; transfer metrics per position kind."""
    from repshift import codes_h5
    from repshift import sae as sae_mod
    from repshift.h5io import read_activations

    wc = wildcards or {}
    device = _device(params.get("device", "auto"))
    sae_dirs = {int(k): v for k, v in params["sae_dirs"].items()}
    tables = []
    with atomic_dir(output["codes"]) as tmp:
        for layer in params["layers"]:
            layer = int(layer)
            acts = read_activations(layer_file(input["acts"], layer))
            tok = acts.tokens()
            sae_path = Path(sae_dirs[layer])
            sae = sae_mod.load_sae(sae_path, device=device)
            model = str(acts.attrs.get("model"))
            sae_mod.check_sae_compat(sae, d_model=acts.d_model, layer=layer, model_name=model)
            codes = sae_mod.encode(sae, tok.acts_TD)
            rows = []
            for kind, sel in token_groups(tok, acts.modality).items():
                metrics = sae_mod.transfer_metrics(sae, tok.acts_TD[sel], codes.take(sel))
                rows += [
                    {
                        "sae": wc.get("sae", ""),
                        "model": model,
                        "dataset": wc.get("dataset", ""),
                        "layer": layer,
                        "position_kind": kind,
                        "metric": m,
                        "value": float(v),
                    }
                    for m, v in metrics.items()
                ]
            attrs = {
                "layer": layer,
                "model": model,
                "sae_path": str(sae_path),
                "neuronpedia_id": sae_mod.sae_neuronpedia_id(sae) or "",
                **provenance(params),
            }
            path = tmp / f"layer-{layer}.codes.h5"
            codes_h5.write_codes(
                path,
                codes,
                example_offsets_N1=tok.offsets_N1,
                pooled_NF=pooled_codes(codes, tok.offsets_N1, tok.kinds_T, acts.modality),
                attrs=attrs,
            )
            codes_h5.write_token_index(
                path, example_id=acts.example_id, modality=acts.modality, kinds_T=tok.kinds_T, ids_T=tok.ids_T
            )
            table = pd.DataFrame(rows)
            table.to_csv(tmp / f"layer-{layer}.transfer.tsv", sep="\t", index=False, float_format="%.6g")
            tables.append(table)
        pd.concat(tables, ignore_index=True).to_csv(
            tmp / "transfer.tsv", sep="\t", index=False, float_format="%.6g"
        )


TOKEN_GROUPS = {
    "text": "text tokens of text-only inputs",
    "image": "image-token positions",
    "prompt": "text tokens of image inputs (the prompt after the image)",
    "bos": "BOS positions (reported apart; never pooled)",
}


def token_groups(tok, modality_N: np.ndarray) -> dict[str, np.ndarray]:
    """Token rows by position kind, with text split by input modality; pads are not stored, specials dropped."""
    from repshift.h5io import POSITION_KINDS

    example_T = np.repeat(np.arange(len(modality_N)), np.diff(tok.offsets_N1))
    image_row_T = modality_N[example_T] == "image"
    text_T = tok.kinds_T == POSITION_KINDS["text"]
    groups = {
        "text": text_T & ~image_row_T,
        "image": tok.kinds_T == POSITION_KINDS["image"],
        "prompt": text_T & image_row_T,
        "bos": tok.kinds_T == POSITION_KINDS["bos"],
    }
    return {k: np.flatnonzero(v) for k, v in groups.items() if v.any()}


def _device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def align_text_tokens(
    base_idx: dict, adapted_idx: dict, *, base: str, adapted: str
) -> tuple[np.ndarray, np.ndarray]:
    """Token rows of the text tokens (no BOS, pads, specials) of the text examples both models saw.

    Raises if an example's token ids differ: a text-only comparison needs identical inputs.
    """
    from repshift.h5io import POSITION_KINDS

    where = {
        e: j
        for j, (e, m) in enumerate(zip(adapted_idx["example_id"], adapted_idx["modality"], strict=True))
        if m == "text"
    }
    sel_a, sel_b = [], []
    for i, (eid, modality) in enumerate(zip(base_idx["example_id"], base_idx["modality"], strict=True)):
        if modality != "text" or eid not in where:
            continue
        j = where[eid]
        a0, a1 = base_idx["offsets"][i], base_idx["offsets"][i + 1]
        b0, b1 = adapted_idx["offsets"][j], adapted_idx["offsets"][j + 1]
        ids_a, ids_b = base_idx["ids_T"][a0:a1], adapted_idx["ids_T"][b0:b1]
        if not np.array_equal(ids_a, ids_b):
            raise ValueError(
                f"example {eid}: token ids differ between {base} and {adapted} "
                f"({ids_a[:8].tolist()}... vs {ids_b[:8].tolist()}...); a text-only comparison needs identical "
                "inputs (same tokenizer vocabulary, same BOS)"
            )
        keep = np.flatnonzero(base_idx["kinds_T"][a0:a1] == POSITION_KINDS["text"])
        sel_a.append(keep + a0)
        sel_b.append(keep + b0)
    if not sel_a:
        raise ValueError(f"no common text examples between {base} and {adapted}")
    return np.concatenate(sel_a), np.concatenate(sel_b)


@step
def compare_sae(*, input, output, params, wildcards=None, **_):
    """Shift between two models' SAE codes at every layer, on identical text tokens (ids asserted equal)."""
    from repshift import codes_h5
    from repshift import sae as sae_mod

    wc = wildcards or {}
    comp = params["comparison"]
    tables, latent_tables = [], []
    for layer in params["layers"]:
        layer = int(layer)
        pa = Path(input["base"]) / f"layer-{layer}.codes.h5"
        pb = Path(input["adapted"]) / f"layer-{layer}.codes.h5"
        base_codes, meta = codes_h5.read_codes(pa, load_pooled=False)
        adapted_codes, _ = codes_h5.read_codes(pb, load_pooled=False)
        rows_a, rows_b = align_text_tokens(
            codes_h5.read_token_index(pa),
            codes_h5.read_token_index(pb),
            base=comp["base"],
            adapted=comp["adapted"],
        )
        np_id = meta["attrs"].get("neuronpedia_id") or None
        metrics, latents = sae_mod.shift_metrics(
            base_codes.take(rows_a), adapted_codes.take(rows_b), neuronpedia_id=np_id
        )
        common = {
            "comparison": wc.get("comparison", ""),
            "base": comp["base"],
            "adapted": comp["adapted"],
            "sae": comp["sae"],
            "dataset": comp["dataset"],
            "layer": layer,
        }
        tables.append(pd.DataFrame([{**common, "metric": k, "value": float(v)} for k, v in metrics.items()]))
        latent_tables.append(latents.assign(**common))
    with atomic_path(output["shift"]) as tmp:
        pd.concat(tables, ignore_index=True).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    with atomic_path(output["latents"]) as tmp:
        pd.concat(latent_tables, ignore_index=True).to_csv(tmp, sep="\t", index=False, float_format="%.6g")


# --- probes --------------------------------------------------------------------------------------------
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


# --- figures -------------------------------------------------------------------------------------------
@step
def plot_layer_sweep(*, input, output, params, **_):
    """The layer-sweep figure (PDF + PNG) and the tidy TSV of everything it plots."""
    from repshift import figures

    def paths(key):
        value = input.get(key, [])
        return [value] if isinstance(value, str) else list(value)

    transfer = [str(p) for d in paths("codes") for p in sorted(Path(d).glob("layer-*.transfer.tsv"))]
    main = set(params.get("main_tasks", []))
    probe_tables = [p for p in paths("probes") if not main or Path(p).parent.name in main]
    figures.layer_sweep(
        paths("shift"),
        transfer,
        probe_tables,
        out_pdf=output["pdf"],
        out_png=output["png"],
        out_tsv=output["tsv"],
    )


@step
def plot_probe_tasks(*, input, output, params, **_):
    """One panel per probe task (semantic, modality, attributes): accuracy per layer with intervals (PDF, PNG, TSV)."""
    from repshift import figures

    value = input.get("probes", [])
    figures.probe_tasks(
        [value] if isinstance(value, str) else list(value),
        out_pdf=output["pdf"],
        out_png=output["png"],
        out_tsv=output["tsv"],
    )


@step
def plot_contact_sheet(*, input, output, params, **_):
    """A contact sheet of an image dataset: each base image and its variants, as extraction sees them."""
    from repshift import datasets

    df, _ = datasets.read_manifest(input["manifest"])
    with atomic_path(output["png"]) as tmp:
        datasets.contact_sheet(df, input["images"], tmp, n=int(params.get("n", 8)))
