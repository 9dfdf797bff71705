"""Preflight: before any job, is every hub repo the DAG needs reachable or already cached?

One check of the models with ``source: hub`` and the pretrained SAE releases in ``saes``, reporting everything
missing in ONE message (offline mode, no token, licence not accepted, no network) with what to do. Nothing is
asked of the hub when every file needed is already in the local HF cache. No Snakemake here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from repshift.config.specs import ConfigError, model_spec
from repshift.config.targets import sae_layers, sae_models

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def needed_files(cfg: Mapping[str, Any]) -> dict[str, list[str]]:
    """hub repo id -> files the run reads first from it (config.json per model; per SAE layer the weights file of
    the release's format: ``params.npz`` for Gemma Scope, ``cfg.json`` + ``sae_weights.safetensors`` for
    releases in sae-lens's own format such as gemma-2b-res-jb)."""
    need: dict[str, list[str]] = {}
    for name in cfg["models"]:
        spec = model_spec(cfg, name)
        if spec.source == "hub" and spec.id:
            if "config.json" not in need.setdefault(spec.id, []):  # a VLM and its vision stream share an id
                need[spec.id].append("config.json")
    for sae, s in cfg["saes"].items():
        if s.get("source") != "pretrained":
            continue
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        release = get_pretrained_saes_directory().get(s["release"])
        if release is None:
            raise ConfigError(f"saes.{sae}.release: {s['release']!r} is not a sae-lens pretrained release")
        layers = sorted({layer for m, _ in sae_models(cfg, sae) for layer in sae_layers(cfg, sae, m)})
        for layer in layers:
            sae_id = s["id_template"].format(layer=layer)
            path = release.saes_map.get(sae_id, sae_id)
            need.setdefault(release.repo_id, []).extend(f"{path}/{f}" for f in _sae_files(release))
    return need


#: sae-lens ``conversion_func`` -> the files its loader reads from each SAE folder (formats known here).
SAE_FORMAT_FILES: dict[str | None, tuple[str, ...]] = {
    "gemma_2": ("params.npz",),  # Gemma Scope
    None: ("cfg.json", "sae_weights.safetensors"),  # sae-lens's own format (e.g. gemma-2b-res-jb)
    "sae_lens": ("cfg.json", "sae_weights.safetensors"),
}


def _sae_files(release) -> tuple[str, ...]:
    """The files sae-lens's loader for this release (its ``conversion_func``) reads from each SAE folder; none for
    other formats (a guessed file name would be reported missing with network up): fetch_sae names what fails."""
    return SAE_FORMAT_FILES.get(release.conversion_func, ())


def _cached(repo: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, filename), str)


def _probe(repo: str, filename: str) -> str | None:
    """Why ``filename`` of ``repo`` cannot be fetched (None: it can), asking the hub for its metadata only."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        get_hf_file_metadata(hf_hub_url(repo, filename), timeout=10)
    except GatedRepoError:
        return (
            "gated: accept its licence on https://huggingface.co/" + repo + " with the account of your token"
        )
    except RepositoryNotFoundError:
        return "not found, or private and no valid token (hf auth login, or set HF_TOKEN)"
    except HfHubHTTPError as err:
        return f"hub error ({err.__class__.__name__}: {str(err).splitlines()[0]})"
    except OSError as err:  # connection refused, DNS, timeout
        return f"no network ({err.__class__.__name__})"
    return None


def preflight_hub(cfg: Mapping[str, Any], *, environ: Mapping[str, str] = os.environ) -> None:
    """Raise ConfigError listing every needed hub repo that is neither cached nor reachable (one message)."""
    missing = {repo: [f for f in files if not _cached(repo, f)] for repo, files in needed_files(cfg).items()}
    missing = {repo: files for repo, files in missing.items() if files}
    if not missing:
        return
    offline = [v for v in OFFLINE_VARS if environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")]
    if offline:
        reasons = {repo: f"{len(files)} file(s) not in the local HF cache" for repo, files in missing.items()}
        cause = f"{' and '.join(offline)} {'is' if len(offline) == 1 else 'are'} set, so the hub is not asked"
        todo = f"unset {' / '.join(offline)} and run once with network access to download them"
    else:
        reasons = {repo: _probe(repo, files[0]) for repo, files in missing.items()}
        reasons = {repo: why for repo, why in reasons.items() if why}
        if not reasons:
            return
        cause, todo = "the hub refused or could not be reached", "fix each line below"
    lines = "\n".join(f"  {repo}: {why}" for repo, why in sorted(reasons.items()))
    raise ConfigError(
        f"preflight: {len(reasons)} hub repo(s) this run needs are unavailable ({cause}):\n{lines}\n"
        f"To do: {todo}; gated Gemma repos need a token (`hf auth login` or HF_TOKEN) of an account that "
        "accepted their licence. The demo preset runs offline: `make demo`."
    )
