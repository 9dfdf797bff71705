"""Stand-ins for the hub and for COCO, so that the *real* configuration runs end to end offline (`make rehearsal`).

* :func:`build_standin_hub` fills a Hugging Face cache folder (what ``HF_HUB_CACHE`` points at) with tiny
  random-weight models stored under the exact repo ids a config names, in the cache layout that
  ``from_pretrained`` and ``hf_hub_download`` resolve with ``HF_HUB_OFFLINE=1``::

      models--google--gemma-2-2b/refs/main                      (the commit hash, no newline)
      models--google--gemma-2-2b/snapshots/<hash>/config.json   (plain files; the hub cache symlinks to blobs/)

  Real depths (the config's ``num_layers``: 26 decoder blocks, 27 SigLIP blocks for config.yaml), the real
  224 px input with 56 px patches (16 image tokens, where the real towers have 256 or more: on CPU the sequence
  length is what costs), small widths, the demo's tokenizer and processor (not the real tokenizers). Each repo's stand-in
  has the architecture of the real checkpoint (:data:`STANDIN_ARCHS`: Gemma-1 for ``google/gemma-2b`` and
  ``Intel/llava-gemma-2b``'s decoder, Mistral for ``mistralai/Mistral-7B-Instruct-v0.2`` and LLaVA-NeXT-Mistral;
  Gemma-2 otherwise). Gemma Scope SAEs are written in Gemma Scope's own format (``params.npz`` holding
  ``W_enc``, ``W_dec``, ``b_enc``, ``b_dec``, ``threshold``) at the folders sae-lens's ``pretrained_saes.yaml``
  maps each ``layer_L/width_16k/canonical`` id to, in the repo it names (``google/gemma-scope-2b-pt-res``), so
  ``SAE.from_pretrained(release, sae_id)`` runs its own Gemma-2 loader on them. Releases in sae-lens's own
  format (``gemma-2b-res-jb``: ``cfg.json`` + ``sae_weights.safetensors`` + ``sparsity.safetensors`` per
  folder) get those files, with ``d_in``/``d_sae`` in the ``cfg.json`` and the block-12
  ``normalize_activations`` the release lists a scaling factor for (:func:`sae_lens_format_files`).
* sae-lens's Gemma-2 loader hard-codes ``d_in`` (2304 for "2b" repos) and ``d_sae`` (16384 for
  ``width_16k``). :func:`install_sae_shape_override` adds ``d_in``/``d_sae`` to the release's
  ``config_overrides`` in sae-lens's (cached) pretrained-SAE directory, which that loader applies last (only
  Gemma-Scope-format releases need it). The
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

#: Environment variable read by scripts/rehearsal/sitecustomize.py: ``RELEASE=D_IN,D_SAE[;RELEASE=D_IN,D_SAE]``.
SAE_SHAPE_ENV = "REPSHIFT_STANDIN_SAE_SHAPE"

#: Widths of the stand-in models (depths are the real ones, read from the config's ``num_layers``).
LLM_WIDTH = dict(
    hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16
)
VISION_WIDTH = 32
#: The real PaliGemma-2-224 input size (224 px) with 56 px patches: 16 image tokens instead of 256 (14 px patches),
#: so that a stand-in VLM's sequences are ~30 tokens, not ~270 (the rehearsal's CPU time is mostly VLM forwards).
IMAGE_SIZE, PATCH_SIZE = 224, 56
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


#: Repo id -> architecture of the real checkpoint's decoder (for a VLM: the language model inside it), for the repos
#: whose stand-in is not the default Gemma-2. Read off the hub configs: google/gemma-2b is ``GemmaForCausalLM``
#: (Gemma-1, 18 blocks); Intel/llava-gemma-2b is LLaVA-1.5 on gemma-2b; Mistral-7B-Instruct-v0.2 is
#: ``MistralForCausalLM`` (32 blocks); llava-hf/llava-v1.6-mistral-7b-hf is LLaVA-NeXT on it.
STANDIN_ARCHS: dict[str, str] = {
    "google/gemma-2b": "gemma",
    "google/gemma-2b-it": "gemma",
    "Intel/llava-gemma-2b": "gemma",
    "mistralai/Mistral-7B-Instruct-v0.2": "mistral",
    "llava-hf/llava-v1.6-mistral-7b-hf": "mistral",
}
#: The architecture of a repo missing from :data:`STANDIN_ARCHS`.
DEFAULT_ARCH = "gemma2"
#: Stand-in LLM builder per architecture (all use the demo tokenizer, so any can be a demo VLM's decoder).
LLM_BUILDERS: dict[str, str] = {
    "gemma2": "build_demo_llm",
    "gemma": "build_demo_gemma",
    "mistral": "build_demo_mistral",
}
#: Vision-tower depth of a VLM family when the config has no vision-stream model naming it (the real towers:
#: SigLIP So400m 27 blocks, CLIP ViT-L/14 24).
VISION_DEPTHS: dict[str, int] = {"paligemma": 27, "llava": 24, "llava-next": 24}


def standin_arch(repo_id: str) -> str:
    """The architecture of ``repo_id``'s stand-in decoder (:data:`STANDIN_ARCHS`, else :data:`DEFAULT_ARCH`)."""
    return STANDIN_ARCHS.get(repo_id, DEFAULT_ARCH)


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


def _standin_base(work: Path, bases: dict, arch: str, depth: int) -> Path:
    """The stand-in LLM of ``arch`` at ``depth`` blocks (built once; ``bases`` caches them)."""
    from repshift.demo import models

    if arch not in LLM_BUILDERS:
        raise ValueError(
            f"no stand-in builder for architecture {arch!r}: choose one of {', '.join(LLM_BUILDERS)}"
        )
    if (arch, depth) not in bases:
        name = "llm-base" if arch == DEFAULT_ARCH else f"llm-base-{arch}"
        if any(a == arch for a, _ in bases):
            name += f"-{depth}"
        builder = getattr(models, LLM_BUILDERS[arch])
        bases[arch, depth] = builder(work / name, num_hidden_layers=depth, **LLM_WIDTH)
    return bases[arch, depth]


def build_standin_models(
    cache: str | os.PathLike, config: dict[str, Any], work: str | os.PathLike
) -> list[str]:
    """Tiny models under every hub id of ``config['models']``, each of its real architecture (:func:`standin_arch`);
    a VLM's decoder is a copy of the stand-in LLM of its architecture and depth (perturbed from the middle on)."""
    from repshift.demo.models import build_demo_vlm

    work = Path(work)
    repos = _hub_models(config)
    llm_depths = [e["num_layers"] for e in repos.values() if e["family"] == "causal-lm"]
    bases: dict[tuple[str, int], Path] = {}
    if not llm_depths:
        _standin_base(work, bases, DEFAULT_ARCH, 26)  # as before: the default base even without an LLM
    for repo_id, entry in repos.items():
        arch = standin_arch(repo_id)
        depth = entry["num_layers"] or (llm_depths[0] if llm_depths else 26)
        base = _standin_base(work, bases, arch, depth)
        if entry["family"] == "causal-lm":
            publish_snapshot(cache, repo_id, base)
            continue
        out = build_demo_vlm(
            work / repo_id.replace("/", "--"),
            base_dir=base,
            arch=entry["family"],
            perturb_from=depth // 2,
            image_size=IMAGE_SIZE,
            patch_size=PATCH_SIZE,
            vision_layers=entry["vision_layers"] or VISION_DEPTHS.get(entry["family"], 27),
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


def sae_lens_format_files(
    release: str, sae_id: str, d_in: int, d_sae: int, seed: int, acts_ND: np.ndarray | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
    """``cfg.json`` dict, ``sae_weights.safetensors`` tensors and log-sparsity of a stand-in SAE of a sae-lens-format
    release (the format of jbloom's gemma-2b-res-jb: pre-6.0 keys such as ``hook_point``, ReLU, ``W_enc`` d_in x
    d_sae). ``normalize_activations`` is ``expected_average_only_in`` exactly for the ids the release lists a
    ``norm_scaling_factor`` for (sae-lens folds it at load), ``none`` otherwise. Other values are stand-in choices.
    With ``acts_ND``, ``b_enc`` is minus the calibrated threshold of :func:`gemma_scope_params` (a ReLU latent then
    fires on the same ``STANDIN_FIRING_RATE`` of the samples), applied after the release's input scaling."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    lookup = get_pretrained_saes_directory()[release]
    factor = (lookup.norm_scaling_factor or {}).get(sae_id)
    norm = "none" if factor is None else "expected_average_only_in"
    if acts_ND is not None and factor is not None:
        acts_ND = acts_ND * float(factor)  # what the encoder sees once sae-lens folds the factor in
    params = gemma_scope_params(d_in, d_sae, seed, acts_ND=acts_ND)
    weights = {k: params[k] for k in ("W_enc", "W_dec", "b_enc", "b_dec")}
    if acts_ND is not None:
        weights["b_enc"] = -params["threshold"]
    cfg = {
        "model_name": lookup.model,
        "hook_point": sae_id,
        "hook_point_layer": int(sae_id.split(".")[1]) if sae_id.startswith("blocks.") else 0,
        "hook_point_head_index": None,
        "d_in": int(d_in),
        "d_sae": int(d_sae),
        "activation_fn_str": "relu",
        "apply_b_dec_to_input": False,
        "normalize_activations": norm,
        "dtype": "float32",
        "device": "cpu",
        "context_size": 1024,
        "prepend_bos": True,
        "dataset_path": "repshift-standin",
        "sae_lens_version": "2.1.3",
    }
    log_sparsity = np.full(d_sae, -3.0, np.float32)
    return cfg, weights, log_sparsity


def _write_sae_lens_format(
    folder: Path, release: str, sae_id: str, d_in: int, d_sae: int, seed: int, acts_ND: np.ndarray | None
) -> None:
    import json

    import torch
    from safetensors.torch import save_file

    cfg, weights, log_sparsity = sae_lens_format_files(release, sae_id, d_in, d_sae, seed, acts_ND)
    (folder / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    save_file({k: torch.from_numpy(v) for k, v in weights.items()}, folder / "sae_weights.safetensors")
    save_file({"sparsity": torch.from_numpy(log_sparsity)}, folder / "sparsity.safetensors")


def _write_gemma_scope(
    folder: Path, release: str, sae_id: str, d_in: int, d_sae: int, seed: int, acts_ND: np.ndarray | None
) -> None:
    np.savez(folder / "params.npz", **gemma_scope_params(d_in, d_sae, seed, acts_ND=acts_ND))


#: sae-lens ``conversion_func`` of a release -> writer of one stand-in SAE folder in that release's own format.
SAE_WRITERS = {
    "gemma_2": _write_gemma_scope,
    None: _write_sae_lens_format,
    "sae_lens": _write_sae_lens_format,
}


def release_format(release: str) -> str | None:
    """The ``conversion_func`` of a sae-lens release (None: sae-lens's own format), if a stand-in can be written."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    lookup = get_pretrained_saes_directory().get(release)
    if lookup is None:
        raise ValueError(f"{release!r} is not a sae-lens pretrained release")
    if lookup.conversion_func not in SAE_WRITERS:
        raise ValueError(
            f"release {release!r} has conversion_func {lookup.conversion_func!r}; stand-ins exist for "
            f"{', '.join(str(k) for k in SAE_WRITERS)}"
        )
    return lookup.conversion_func


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
    """Stand-in SAEs for ``sae_ids`` of ``release`` in the release's own format (Gemma Scope's ``params.npz``, or
    sae-lens's ``cfg.json`` + ``sae_weights.safetensors`` + ``sparsity.safetensors``), where sae-lens looks
    (``acts[i]``: residual samples that set the sparsity of ``sae_ids[i]``, see :func:`gemma_scope_params`)."""
    from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name

    write = SAE_WRITERS[release_format(release)]
    repo_id = None
    with atomic_dir(Path(work_dir := Path(cache) / ".standin-saes")) as tmp:
        for i, sae_id in enumerate(sae_ids):
            repo_id, folder = get_repo_id_and_folder_name(release, sae_id)
            (tmp / folder).mkdir(parents=True, exist_ok=True)
            write(tmp / folder, release, sae_id, d_in, d_sae, seed + i, None if acts is None else acts[i])
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


def parse_sae_shapes(value: str) -> dict[str, tuple[int, int]]:
    """``RELEASE=D_IN,D_SAE[;RELEASE=D_IN,D_SAE...]`` -> {release: (d_in, d_sae)} (empty string: none)."""
    shapes = {}
    for item in filter(None, (v.strip() for v in value.split(";"))):
        try:
            release, shape = item.split("=")
            d_in, d_sae = (int(v) for v in shape.split(","))
        except ValueError as exc:
            raise ValueError(f"{SAE_SHAPE_ENV}={value!r}: expected RELEASE=D_IN,D_SAE[;...]") from exc
        shapes[release] = (d_in, d_sae)
    return shapes


def install_sae_shape_override_from_env() -> None:
    """:func:`install_sae_shape_override` for each ``release=d_in,d_sae`` of ``REPSHIFT_STANDIN_SAE_SHAPE``."""
    for release, (d_in, d_sae) in parse_sae_shapes(os.environ.get(SAE_SHAPE_ENV, "")).items():
        install_sae_shape_override(release, d_in, d_sae)


def _release_layers(release: str, id_template: str, depth: int) -> dict[int, str]:
    """Layer -> id for the layers 0..depth-1 whose ``id_template`` id the release has (sae-lens format releases
    list only some blocks: gemma-2b-res-jb has 0, 6, 10, 12, 17)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    listed = get_pretrained_saes_directory()[release].saes_map
    ids = {layer: id_template.format(layer=layer) for layer in range(depth)}
    return {layer: sae_id for layer, sae_id in ids.items() if sae_id in listed}


def _sae_base_llm(cache: str | os.PathLike, config: dict[str, Any], release: str) -> Path:
    """The stand-in snapshot of the configured causal LM whose repo id ends with the release's model name (sae-lens's
    ``model``, e.g. gemma-2-2b or gemma-2b); its residual stream calibrates the release's stand-in SAEs."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    model = get_pretrained_saes_directory()[release].model
    llms = [
        s["id"] for s in config["models"].values() if s.get("source") == "hub" and s["family"] == "causal-lm"
    ]
    matching = [r for r in llms if r.lower().endswith("/" + model.lower())] or llms
    if not matching:
        raise ValueError(f"no hub causal LM in the config to calibrate release {release!r} on")
    repo_id = matching[0]
    return repo_folder(cache, repo_id) / "snapshots" / fake_commit(repo_id)


def build_standin_hub(
    cache: str | os.PathLike, config: dict[str, Any], work: str | os.PathLike
) -> dict[str, Any]:
    """Models and pretrained SAEs for every hub id and ``source: pretrained`` SAE of ``config``. ``saes`` of the
    summary maps each SAE to its release, widths and whether its format needs :func:`install_sae_shape_override`
    (Gemma Scope's loader hard-codes the real widths; a sae-lens ``cfg.json`` carries them)."""
    repos = build_standin_models(cache, config, work)
    depth = max(int(s["num_layers"]) for s in config["models"].values() if s.get("stream") != "vision")
    saes = {}
    samples_by_llm: dict[Path, dict[int, np.ndarray]] = {}  # one forward pass per base LLM, not per release
    for name, spec in (config.get("saes") or {}).items():
        if spec.get("source") != "pretrained":
            continue
        layers = _release_layers(spec["release"], spec["id_template"], depth)
        llm = _sae_base_llm(cache, config, spec["release"])
        if llm not in samples_by_llm:
            samples_by_llm[llm] = residual_samples(llm)
        build_standin_saes(
            cache,
            spec["release"],
            list(layers.values()),
            d_in=LLM_WIDTH["hidden_size"],
            d_sae=STANDIN_D_SAE,
            acts=[samples_by_llm[llm][layer] for layer in layers],
        )
        saes[name] = {
            "release": spec["release"],
            "d_in": LLM_WIDTH["hidden_size"],
            "d_sae": STANDIN_D_SAE,
            "shape_override": release_format(spec["release"]) == "gemma_2",
        }
    return {"models": repos, "saes": saes}


def sae_shape_env_value(summary: dict[str, Any]) -> str:
    """The ``REPSHIFT_STANDIN_SAE_SHAPE`` value for :func:`build_standin_hub`'s summary (releases needing it)."""
    shapes = {s["release"]: (s["d_in"], s["d_sae"]) for s in summary["saes"].values() if s["shape_override"]}
    return ";".join(f"{r}={d_in},{d_sae}" for r, (d_in, d_sae) in shapes.items())


def build_standin_imagenet(
    root: str | os.PathLike, *, n_val: int, n_train: int = 2, image_size: int = 64
) -> Path:
    """A stand-in ImageNet-1k in the ILSVRC-2012 layout (:func:`repshift.demo.imagenet.make_fake_imagenet`: all of
    its classes, ``n_val`` val images each, val as class folders) for a config's ``imagenet.root``."""
    from repshift.demo.imagenet import CLASSES, make_fake_imagenet

    return make_fake_imagenet(
        root, n_classes=len(CLASSES), n_train=n_train, n_val=n_val, image_size=image_size
    )


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
