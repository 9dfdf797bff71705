"""SAEs through sae-lens: release/id naming, fetching into the cache, loading, compatibility checks."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from repshift.formats.atomic import atomic_dir, write_json
from repshift.formats.provenance import provenance

if TYPE_CHECKING:
    from sae_lens import SAE


log = logging.getLogger(__name__)


GEMMA_SCOPE_RELEASE = "gemma-scope-2b-pt-res-canonical"


GEMMA_SCOPE_ID_TEMPLATE = "layer_{layer}/width_16k/canonical"


#: Name of the small JSON file written next to the SAE files (``cfg.json``, ``sae_weights.safetensors``).
SOURCE_FILENAME = "repshift_source.json"


def hook_name_for_layer(layer: int) -> str:
    """The TransformerLens hook an SAE for repshift layer ``layer`` (output of block ``layer``) must read."""
    return f"blocks.{int(layer)}.hook_resid_post"


def sae_id_for_layer(template: str, layer: int) -> str:
    """Fill a sae-lens SAE id template, e.g. ``layer_{layer}/width_16k/canonical`` -> ``layer_12/...``."""
    if "{layer}" not in template:
        raise ValueError(f"SAE id template {template!r} has no '{{layer}}' placeholder")
    if int(layer) < 0:
        raise ValueError(f"layer must be >= 0, got {layer}")
    return template.format(layer=int(layer))


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the hub could not give us the files" (offline, no token, gated, network)."""
    errors: list[type[BaseException]] = [OSError, ConnectionError, TimeoutError]
    try:
        from huggingface_hub import errors as hf_errors

        for name in ("EntryNotFoundError", "HfHubHTTPError", "OfflineModeIsEnabled", "HTTPError"):
            cls = getattr(hf_errors, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                errors.append(cls)
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency of sae-lens
        pass
    return tuple(errors)


def _hub_hint(exc: BaseException) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    try:
        from huggingface_hub import get_token

        has_token = get_token() is not None
    except Exception:  # pragma: no cover - defensive
        has_token = False
    missing = []
    if offline:
        missing.append("HF_HUB_OFFLINE is set, so the hub is not contacted (unset it to download)")
    missing.append("network access to huggingface.co")
    missing.append(
        "a Hugging Face token with access to the gated Gemma Scope / Gemma repos: accept the licence on "
        "the hub, then `hf auth login` (older huggingface_hub: `huggingface-cli login`) or export HF_TOKEN "
        f"(a token was {'found' if has_token else 'NOT found'} here)"
    )
    return "; ".join(missing) + f" [{type(exc).__name__}: {exc}]"


def fetch_pretrained_sae(
    release: str, sae_id: str, out_dir: str | os.PathLike, *, dtype: str = "float32"
) -> Path:
    """Download a pretrained SAE with sae-lens; save it (``save_model`` layout) into ``out_dir`` atomically.

    Raises ``RuntimeError`` naming what is missing (network, a HF token for the gated Gemma Scope weights,
    HF_HUB_OFFLINE) when the hub cannot deliver the weights; ``ValueError`` from sae-lens for an unknown
    release or id passes through unchanged.
    """
    from sae_lens import SAE

    out = Path(out_dir)
    log.info("fetching SAE %s / %s (dtype %s) into %s", release, sae_id, dtype, out)
    try:
        sae = SAE.from_pretrained(release, sae_id, device="cpu", dtype=dtype)
    except _hub_errors() as exc:
        raise RuntimeError(
            f"could not download SAE {sae_id!r} of release {release!r} from the Hugging Face hub. "
            f"Missing: {_hub_hint(exc)}. To try the pipeline without the hub, run the demo preset "
            "(`make demo`), which fits tiny SAEs locally."
        ) from exc
    with atomic_dir(out) as tmp:
        sae.save_model(tmp)
        write_json(
            tmp / SOURCE_FILENAME,
            {"source": "pretrained", "release": release, "sae_id": sae_id, "provenance": provenance()},
        )
    log.info("saved SAE %s / %s (d_in %d, d_sae %d) to %s", release, sae_id, sae.cfg.d_in, sae.cfg.d_sae, out)
    return out


def load_sae(path: str | os.PathLike, *, device: str = "cpu", dtype: str = "float32") -> SAE:
    """Load an SAE saved with ``save_model`` (``SAE.load_from_disk``), in eval mode."""
    from sae_lens import SAE

    p = Path(path)
    if not (p / "cfg.json").is_file():
        raise FileNotFoundError(
            f"no SAE at {p}: expected cfg.json and sae_weights.safetensors written by SAE.save_model "
            "(fetch_pretrained_sae or train_demo_sae)"
        )
    sae = SAE.load_from_disk(p, device=device, dtype=dtype)
    sae.eval()
    return sae


def sae_hook_name(sae: SAE) -> str | None:
    """The hook the SAE was trained on (sae-lens 6 keeps it in ``cfg.metadata.hook_name``)."""
    return sae.cfg.metadata.get("hook_name")


def sae_neuronpedia_id(sae: SAE) -> str | None:
    """Neuronpedia id of the SAE (e.g. ``gemma-2-2b/12-gemmascope-res-16k``), or None (demo/local SAEs)."""
    return sae.cfg.metadata.get("neuronpedia_id")


def check_sae_compat(sae: SAE, *, d_model: int, layer: int, model_name: str = "model") -> None:
    """Raise ``ValueError`` unless ``sae`` reads width ``d_model`` at ``blocks.{layer}.hook_resid_post``."""
    d_in = int(sae.cfg.d_in)
    if d_in != int(d_model):
        raise ValueError(
            f"SAE width mismatch: the SAE reads d_in={d_in} but {model_name} has d_model={d_model}; "
            "use an SAE trained on this model's residual stream"
        )
    expected = hook_name_for_layer(layer)
    hook = sae_hook_name(sae)
    if hook != expected:
        raise ValueError(
            f"SAE hook mismatch: the SAE was trained on {hook!r} but layer {layer} of {model_name} is "
            f"{expected!r} (repshift layer L = output of block L = hidden_states[L+1]); "
            "pick the SAE id for this layer"
        )
    if getattr(sae.cfg, "normalize_activations", "none") not in ("none", None):
        log.warning(
            "SAE normalize_activations=%r: codes depend on a run-time normalisation of the inputs",
            sae.cfg.normalize_activations,
        )
