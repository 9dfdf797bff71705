"""SAEs through sae-lens: release/id naming, fetching into the cache, loading, compatibility checks."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from repshift.formats.atomic import atomic_dir, write_json
from repshift.formats.provenance import provenance

if TYPE_CHECKING:
    import torch
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
    # save_model writes sae-lens 6's cfg layout (hook_name inside `metadata`) but keeps the release's own
    # sae_lens_version; for a pre-6.0 release (gemma-2b-res-jb: 2.1.3) load_from_disk would then re-run the pre-6
    # conversion on the saved file and drop the metadata, hook name included. Mark the file as what it is.
    from sae_lens import __version__ as sae_lens_version

    sae.cfg.metadata.sae_lens_version = sae_lens_version
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
    norm = getattr(sae.cfg, "normalize_activations", "none")
    if norm == "expected_average_only_in":
        raise ValueError(
            f"SAE for layer {layer} of {model_name} was trained on inputs scaled to E||x|| = sqrt(d_in) "
            "(normalize_activations=expected_average_only_in) and the factor was not folded into its weights "
            "(sae-lens's pretrained directory lists no norm_scaling_factor for it): sae.encode would read unscaled "
            "inputs. Fold an estimate first with repshift.sae.load.fold_estimated_norm_scaling on the base "
            "model's activations."
        )
    if norm not in ("none", None):
        # constant_norm_rescale / layer_norm: sae.encode applies them per token (run_time_activation_norm_fn_in)
        log.info("SAE normalize_activations=%r: applied by sae-lens inside sae.encode, per token", norm)


# -- release metadata read offline from sae-lens's pretrained directory (pretrained_saes.yaml) ---------------
#: TransformerLens hook names sae-lens ids and folder names carry (``blocks.6.hook_resid_post``).
_HOOK_RE = re.compile(
    r"blocks\.(\d+)\.(hook_resid_pre|hook_resid_mid|hook_resid_post|hook_mlp_out|hook_attn_out|attn\.hook_z)"
)


#: Gemma Scope style ids (``layer_12/width_16k/canonical``): sae-lens's gemma_2 loader maps them to resid_post.
_LAYER_RE = re.compile(r"(?:^|/)layer_(\d+)(?:/|$)")


@dataclass(frozen=True)
class ReleaseEntry:
    """What sae-lens knows offline about one pretrained SAE (no hub access): its hook, the model it was
    trained on and the activation-norm scaling factor sae-lens folds into the weights when it loads it."""

    release: str
    sae_id: str
    model: str
    repo_id: str
    hook_name: str | None  # None: not derivable offline (then checked when the SAE is fetched)
    norm_scaling_factor: float | None  # set: trained with normalize_activations=expected_average_only_in

    @property
    def block(self) -> int | None:
        m = _HOOK_RE.fullmatch(self.hook_name or "")
        return int(m.group(1)) if m else None

    @property
    def layer(self) -> int | None:
        """repshift's layer (output of block L) this SAE reads, or None when it reads no block output:
        ``blocks.L.hook_resid_post`` -> L; ``blocks.L.hook_resid_pre`` (the input of block L) -> L-1, or None
        for L = 0 (the embeddings); any other hook (mlp_out, attn, resid_mid) -> None."""
        m = _HOOK_RE.fullmatch(self.hook_name or "")
        if m is None:
            return None
        block, hook = int(m.group(1)), m.group(2)
        if hook == "hook_resid_post":
            return block
        if hook == "hook_resid_pre" and block > 0:
            return block - 1
        return None


def release_entry(release: str, sae_id: str) -> ReleaseEntry:
    """Look ``release`` / ``sae_id`` up in sae-lens's pretrained directory (offline). Raises ``ValueError``
    naming the release (with similar names) or the id (with the release's ids) when sae-lens does not list it."""
    import difflib

    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    info = directory.get(release)
    if info is None:
        close = difflib.get_close_matches(release, list(directory), n=4)
        raise ValueError(
            f"SAE release {release!r} is not in sae-lens's pretrained directory (sae_lens/pretrained_saes.yaml)"
            f"{f'; did you mean {close}?' if close else ''} Use a release listed there, or source: local."
        )
    if sae_id not in info.saes_map:
        ids = list(info.saes_map)
        raise ValueError(
            f"SAE id {sae_id!r} is not in release {release!r}; it has {len(ids)} ids, e.g. "
            f"{', '.join(ids[:6])}{' ...' if len(ids) > 6 else ''}. Fix saes.<name>.id_template or the layers."
        )
    hook = None
    for text in (sae_id, info.saes_map[sae_id]):
        m = _HOOK_RE.search(text)
        if m:
            hook = m.group(0)
            break
    if hook is None and info.conversion_func == "gemma_2" and "-res" in release:
        m = _LAYER_RE.search(sae_id)
        hook = hook_name_for_layer(int(m.group(1))) if m else None
    return ReleaseEntry(
        release=release,
        sae_id=sae_id,
        model=info.model,
        repo_id=info.repo_id,
        hook_name=hook,
        norm_scaling_factor=info.norm_scaling_factor.get(sae_id),
    )


def check_release_layer(release: str, id_template: str, layer: int, *, where: str = "saes") -> ReleaseEntry:
    """The release entry for repshift layer ``layer``; raises ``ValueError`` (naming ``where``, the id and its
    hook) unless that SAE reads the output of block ``layer`` (``blocks.{layer}.hook_resid_post``, or
    ``blocks.{layer+1}.hook_resid_pre``, the same tensor)."""
    sae_id = sae_id_for_layer(id_template, layer)
    entry = release_entry(release, sae_id)
    if entry.hook_name is None:
        log.warning(
            "%s: the hook of %s / %s is not known offline; it is checked when the SAE is fetched",
            where,
            release,
            sae_id,
        )
        return entry
    if entry.layer != int(layer):
        if entry.layer is None:
            what = "reads no block output (repshift layers are block outputs, blocks.L.hook_resid_post)"
        else:
            what = f"reads the output of block {entry.layer}, which is repshift layer {entry.layer}"
        raise ValueError(
            f"{where}: layer {layer} asks for SAE {sae_id!r} of release {release!r}, whose hook "
            f"{entry.hook_name!r} {what}; repshift layer L = output of block L = blocks.L.hook_resid_post. "
            "Change the layers or the id_template so that each layer gets the SAE trained on its block output."
        )
    return entry


def fold_estimated_norm_scaling(sae: SAE, acts_ND: torch.Tensor) -> float:
    """For an SAE still marked ``normalize_activations="expected_average_only_in"`` (sae-lens folds the factor
    itself when its directory lists one; otherwise it warns and encodes unscaled inputs): estimate the factor
    with sae-lens's own :class:`ActivationScaler` (sqrt(d_in) / mean ||x||) on ``acts_ND`` and fold it into the
    weights with ``sae.fold_activation_norm_scaling_factor``. Returns the factor. Estimate it once, on the base
    model's activations, and reuse it for the adapted model: a per-model factor would hide a norm shift."""
    import torch
    from sae_lens.training.activation_scaler import ActivationScaler

    if sae.cfg.normalize_activations != "expected_average_only_in":
        raise ValueError(
            f"the SAE has normalize_activations={sae.cfg.normalize_activations!r}: nothing to fold "
            "(only expected_average_only_in needs an estimated scaling factor)"
        )
    scaler = ActivationScaler()
    scaler.estimate_scaling_factor(
        d_in=int(sae.cfg.d_in), data_provider=iter([torch.as_tensor(acts_ND)]), n_batches_for_norm_estimate=1
    )
    sae.fold_activation_norm_scaling_factor(float(scaler.scaling_factor))
    return float(scaler.scaling_factor)
