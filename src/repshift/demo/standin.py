"""Stand-ins for the hub and for COCO, so that the *real* configuration runs end to end offline (`make rehearsal`).

* :func:`build_standin_hub` fills a Hugging Face cache folder (what ``HF_HUB_CACHE`` points at) with tiny
  random-weight models stored under the exact repo ids a config names, in the cache layout that
  ``from_pretrained`` and ``hf_hub_download`` resolve with ``HF_HUB_OFFLINE=1``::

      models--google--gemma-2-2b/refs/main                      (the commit hash, no newline)
      models--google--gemma-2-2b/snapshots/<hash>/config.json   (plain files; the hub cache symlinks to blobs/)

  Real depths (26 decoder blocks, 27 SigLIP blocks, 256 image tokens at 224 px), small widths, the demo's
  tokenizer and processor. Gemma Scope SAEs are written in Gemma Scope's own format (``params.npz`` holding
  ``W_enc``, ``W_dec``, ``b_enc``, ``b_dec``, ``threshold``) at the folders sae-lens's ``pretrained_saes.yaml``
  maps each ``layer_L/width_16k/canonical`` id to, in the repo it names (``google/gemma-scope-2b-pt-res``), so
  ``SAE.from_pretrained(release, sae_id)`` runs its own Gemma-2 loader on them.
* sae-lens's Gemma-2 loader hard-codes ``d_in`` (2304 for "2b" repos) and ``d_sae`` (16384 for
  ``width_16k``). :func:`install_sae_shape_override` adds ``d_in``/``d_sae`` to the release's
  ``config_overrides`` in sae-lens's (cached) pretrained-SAE directory, which that loader applies last. The
  rehearsal therefore cannot prove that the real Gemma Scope widths match the real models, nor anything about
  the real weights' scale, memory or run time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from repshift.formats.atomic import atomic_dir, write_text

log = logging.getLogger(__name__)

#: Environment variable read by scripts/rehearsal/sitecustomize.py: ``RELEASE=D_IN,D_SAE``.
SAE_SHAPE_ENV = "REPSHIFT_STANDIN_SAE_SHAPE"

#: Widths of the stand-in models (depths are the real ones, read from the config's ``num_layers``).
LLM_WIDTH = dict(
    hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16
)
VISION_WIDTH = 32
#: The real PaliGemma-2-224 geometry: 224 px, 14 px patches, 256 image tokens.
IMAGE_SIZE, PATCH_SIZE = 224, 14
#: SAE width of the stand-in Gemma Scope (8 x LLM_WIDTH["hidden_size"]).
STANDIN_D_SAE = 512


def fake_commit(repo_id: str) -> str:
    """A stable 40-hex 'commit hash' for a stand-in repo."""
    return hashlib.sha1(f"repshift-standin:{repo_id}".encode()).hexdigest()


def repo_folder(cache: str | os.PathLike, repo_id: str) -> Path:
    """``models--org--name`` under the cache, as huggingface_hub names it."""
    return Path(cache) / ("models--" + repo_id.replace("/", "--"))


def publish_snapshot(cache: str | os.PathLike, repo_id: str, src: str | os.PathLike) -> Path:
    """Copy the files of ``src`` into the cache as the ``main`` snapshot of ``repo_id``; return the snapshot."""
    commit = fake_commit(repo_id)
    repo = repo_folder(cache, repo_id)
    snapshot = repo / "snapshots" / commit
    with atomic_dir(snapshot) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
    write_text(repo / "refs" / "main", commit)
    return snapshot


def _hub_models(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Repo id -> {family, num_layers, vision_layers} for every ``source: hub`` model of the config."""
    repos: dict[str, dict[str, Any]] = {}
    for name, spec in config["models"].items():
        if spec.get("source") != "hub":
            continue
        entry = repos.setdefault(
            spec["id"], {"family": spec["family"], "num_layers": None, "vision_layers": None}
        )
        key = "vision_layers" if spec.get("stream") == "vision" else "num_layers"
        entry[key] = int(spec["num_layers"])
        log.info("stand-in for model %s: %s (%s %s)", name, spec["id"], key, spec["num_layers"])
    return repos


def build_standin_models(
    cache: str | os.PathLike, config: dict[str, Any], work: str | os.PathLike
) -> list[str]:
    """Tiny models under every hub id of ``config['models']``; VLM decoders are copies of the first LLM."""
    from repshift.demo.models import build_demo_llm, build_demo_vlm

    work = Path(work)
    repos = _hub_models(config)
    llms = {r: e for r, e in repos.items() if e["family"] == "causal-lm"}
    depth = next(iter(llms.values()))["num_layers"] if llms else 26
    base = build_demo_llm(work / "llm-base", num_hidden_layers=depth, **LLM_WIDTH)
    for repo_id, entry in repos.items():
        if entry["family"] == "causal-lm":
            publish_snapshot(cache, repo_id, base)
            continue
        if entry["num_layers"] not in (None, depth):
            raise ValueError(f"{repo_id}: decoder depth {entry['num_layers']} differs from the LLM's {depth}")
        out = build_demo_vlm(
            work / repo_id.replace("/", "--"),
            base_dir=base,
            arch=entry["family"],
            perturb_from=depth // 2,
            image_size=IMAGE_SIZE,
            patch_size=PATCH_SIZE,
            vision_layers=entry["vision_layers"] or 27,
            vision_hidden_size=VISION_WIDTH,
        )
        publish_snapshot(cache, repo_id, out)
    return sorted(repos)


#: Fraction of tokens on which each stand-in latent fires (Gemma Scope's 16k SAEs fire ~50-100 of 16,384 latents
#: per token; a random SAE with a fixed threshold fires half of them, which made every code file ~30x too big).
STANDIN_FIRING_RATE = 0.03


def gemma_scope_params(
    d_in: int, d_sae: int, seed: int, *, acts_ND: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Random JumpReLU weights in Gemma Scope's ``params.npz`` naming and shapes (float32).

    With ``acts_ND`` (residual-stream samples of the layer), each latent's threshold is the
    ``1 - STANDIN_FIRING_RATE`` quantile of its pre-activation on them, so the SAE is as sparse as a trained one;
    without, a fixed 0.05.
    """
    rng = np.random.default_rng(seed)
    W_dec = rng.normal(size=(d_sae, d_in)).astype(np.float32)
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    threshold = np.full(d_sae, 0.05, np.float32)
    if acts_ND is not None:
        pre_NS = acts_ND.astype(np.float32) @ W_dec.T
        threshold = np.maximum(np.quantile(pre_NS, 1 - STANDIN_FIRING_RATE, axis=0), 1e-3).astype(np.float32)
    return {
        "W_enc": np.ascontiguousarray(W_dec.T),
        "W_dec": W_dec,
        "b_enc": np.zeros(d_sae, np.float32),
        "b_dec": np.zeros(d_in, np.float32),
        "threshold": threshold,
    }


def residual_samples(model_dir: str | os.PathLike, ids_BT=None, *, n_seqs: int = 8, seq_len: int = 64):
    """Residual stream at the output of every block (repshift layer L = ``hidden_states[L + 1]``) of the causal LM
    in ``model_dir``, BOS positions left out: ``{layer: acts_ND}``. ``ids_BT`` defaults to ``n_seqs`` seeded
    random sequences of ``seq_len`` tokens after BOS."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if ids_BT is None:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        gen = torch.Generator().manual_seed(0)
        ids_BT = torch.randint(
            len(tokenizer.all_special_ids), len(tokenizer), (n_seqs, seq_len), generator=gen
        )
        ids_BT[:, 0] = tokenizer.bos_token_id
    with torch.no_grad():
        hidden = model(input_ids=ids_BT, output_hidden_states=True).hidden_states
    return {L: h[:, 1:].reshape(-1, h.shape[-1]).numpy() for L, h in enumerate(hidden[1:])}


def build_standin_saes(
    cache: str | os.PathLike,
    release: str,
    sae_ids: list[str],
    *,
    d_in: int,
    d_sae: int,
    seed: int = 0,
    acts: list[np.ndarray] | None = None,
) -> Path:
    """Gemma-Scope-format ``params.npz`` files for ``sae_ids`` of ``release``, where sae-lens looks for them
    (``acts[i]``: residual samples that set the thresholds of ``sae_ids[i]``, see :func:`gemma_scope_params`)."""
    from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name

    repo_id = None
    with atomic_dir(Path(work_dir := Path(cache) / ".standin-saes")) as tmp:
        for i, sae_id in enumerate(sae_ids):
            repo_id, folder = get_repo_id_and_folder_name(release, sae_id)
            (tmp / folder).mkdir(parents=True, exist_ok=True)
            params = gemma_scope_params(d_in, d_sae, seed + i, acts_ND=None if acts is None else acts[i])
            np.savez(tmp / folder / "params.npz", **params)
    if repo_id is None:
        raise ValueError(f"no SAE ids given for release {release!r}")
    snapshot = publish_snapshot(cache, repo_id, work_dir)
    shutil.rmtree(work_dir)
    return snapshot


def install_sae_shape_override(release: str, d_in: int, d_sae: int) -> None:
    """Make sae-lens's pretrained loader build ``release``'s SAEs with these widths (see the module doc)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    lookup = get_pretrained_saes_directory()[release]  # functools.cache: the same dict every caller gets
    lookup.config_overrides = {**(lookup.config_overrides or {}), "d_in": int(d_in), "d_sae": int(d_sae)}


def install_sae_shape_override_from_env() -> None:
    """:func:`install_sae_shape_override` from ``REPSHIFT_STANDIN_SAE_SHAPE=release=d_in,d_sae`` (if set)."""
    value = os.environ.get(SAE_SHAPE_ENV)
    if not value:
        return
    try:
        release, shape = value.split("=")
        d_in, d_sae = (int(v) for v in shape.split(","))
    except ValueError as exc:
        raise ValueError(f"{SAE_SHAPE_ENV}={value!r}: expected RELEASE=D_IN,D_SAE") from exc
    install_sae_shape_override(release, d_in, d_sae)


def build_standin_hub(
    cache: str | os.PathLike, config: dict[str, Any], work: str | os.PathLike
) -> dict[str, Any]:
    """Models and pretrained SAEs for every hub id and ``source: pretrained`` SAE of ``config``."""
    repos = build_standin_models(cache, config, work)
    depth = max(int(s["num_layers"]) for s in config["models"].values() if s.get("stream") != "vision")
    saes = {}
    for name, spec in config.get("saes", {}).items():
        if spec.get("source") != "pretrained":
            continue
        ids = [spec["id_template"].format(layer=layer) for layer in range(depth)]
        samples = residual_samples(Path(work) / "llm-base")
        build_standin_saes(
            cache,
            spec["release"],
            ids,
            d_in=LLM_WIDTH["hidden_size"],
            d_sae=STANDIN_D_SAE,
            acts=[samples[layer] for layer in range(depth)],
        )
        saes[name] = {"release": spec["release"], "d_in": LLM_WIDTH["hidden_size"], "d_sae": STANDIN_D_SAE}
    return {"models": repos, "saes": saes}


def _zip_folder(zip_path: Path, root: Path, folders: list[str]) -> Path:
    """Zip ``root/<folder>/*`` as ``<folder>/<file>`` entries (stored: JPEGs do not compress), like COCO's zips."""
    import zipfile

    from repshift.formats.atomic import atomic_path

    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for folder in folders:
            zf.writestr(zipfile.ZipInfo(f"{folder}/", date_time=(2017, 9, 1, 0, 0, 0)), b"")
            for path in sorted((root / folder).iterdir()):
                info = zipfile.ZipInfo(f"{folder}/{path.name}", date_time=(2017, 9, 1, 0, 0, 0))
                zf.writestr(info, path.read_bytes())
    return zip_path


def archive_checksums(path: str | os.PathLike) -> dict[str, Any]:
    """``size``, ``md5`` and ``sha256`` of a file, as the config's archive entries hold them."""
    data = Path(path).read_bytes()
    return {
        "size": len(data),
        "md5": hashlib.md5(data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def build_standin_archives(
    out: str | os.PathLike, *, image_size: int = 32, cifar_test: int = 2000
) -> dict[str, Path]:
    """``val2017.zip``, ``annotations_trainval2017.zip`` and ``cifar-100-python.tar.gz`` with the real layouts.

    COCO: 5,000 images whose per-category image counts are val2017's (:data:`VAL2017_IMAGE_COUNTS`), at
    ``image_size`` pixels; the annotations archive holds only the val2017 files (the real one also holds
    train2017's). CIFAR-100: ``cifar_test`` test images over all 100 classes (500 train images).
    """
    from repshift.demo.cifar import make_fake_cifar100, write_cifar_archive_tar
    from repshift.demo.coco import VAL2017_IMAGE_COUNTS, VAL2017_N_IMAGES, make_synthetic_coco

    out = Path(out)
    coco = out / "coco"
    if not (coco / "annotations" / "captions_val2017.json").is_file():
        make_synthetic_coco(
            coco, n_images=VAL2017_N_IMAGES, image_size=image_size, category_image_counts=VAL2017_IMAGE_COUNTS
        )
    archives = {
        "val2017": _zip_folder(out / "val2017.zip", coco, ["val2017"]),
        "annotations_trainval2017": _zip_folder(out / "annotations_trainval2017.zip", coco, ["annotations"]),
    }
    cifar = make_fake_cifar100(out / "cifar", n_test=cifar_test)
    archives["cifar100"] = write_cifar_archive_tar(cifar, out / "cifar-100-python.tar.gz")
    return archives
