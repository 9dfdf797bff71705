"""Sparse autoencoders as a shared basis: fetch, load, check, fit (demo), encode, and compare codes.

One SAE basis (Gemma Scope, or a tiny demo SAE) is applied to the residual streams of two models at the
same layer. ``encode`` turns activations into :class:`SparseCodes`; ``transfer_metrics`` says how well the
SAE reconstructs one model's activations (the Kissane et al. transfer metrics); ``shift_metrics`` compares
the codes of the *same tokens* under two models.

Layer convention (see ``repshift.LAYER_CONVENTION``): layer L is the output of decoder block L, which is what
an SAE with hook ``blocks.L.hook_resid_post`` reads. ``check_sae_compat`` enforces it.

sae-lens (6.x) is imported lazily inside the functions that need it: importing it takes seconds.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from repshift.atomic import atomic_dir, write_json
from repshift.provenance import provenance

if TYPE_CHECKING:
    from sae_lens import SAE, JumpReLUSAE

log = logging.getLogger(__name__)

GEMMA_SCOPE_RELEASE = "gemma-scope-2b-pt-res-canonical"
GEMMA_SCOPE_ID_TEMPLATE = "layer_{layer}/width_16k/canonical"

#: Name of the small JSON file written next to the SAE files (``cfg.json``, ``sae_weights.safetensors``).
SOURCE_FILENAME = "repshift_source.json"

#: A latent is "dense" when it fires on more than this fraction of tokens.
DENSE_THRESHOLD = 0.1

NEURONPEDIA_BASE = "https://www.neuronpedia.org"


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


# ----------------------------------------------------------------------------------------------------------
# Fetching, loading, checking
# ----------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------
# Demo SAE
# ----------------------------------------------------------------------------------------------------------


def _batches(x_ND: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless shuffled mini-batches (reshuffled every epoch), deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    n = x_ND.shape[0]
    while True:
        perm = torch.from_numpy(rng.permutation(n))
        for start in range(0, n - batch_size + 1, batch_size):
            yield x_ND[perm[start : start + batch_size]]


def train_demo_sae(
    acts_ND: np.ndarray,
    out_dir: str | os.PathLike,
    *,
    layer: int,
    d_sae: int = 256,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    l0_coefficient: float = 0.5,
    model_name: str = "demo",
    sparsity_loss_mode: str = "tanh",
    pre_act_loss_coefficient: float | None = 1.0,
    init_threshold: float = 0.1,
    bandwidth: float = 0.05,
    ste_to_input: bool = False,
) -> Path:
    """Fit a tiny JumpReLU SAE on ``acts_ND`` with sae-lens' ``SAETrainer``; save it as an inference SAE.

    Shaped like Gemma Scope: JumpReLU, hook ``blocks.{layer}.hook_resid_post``,
    ``apply_b_dec_to_input=False``, ``normalize_activations="none"``; saved with ``JumpReLUSAE.save_model``
    so ``SAE.load_from_disk`` returns a ``JumpReLUSAE`` that reads raw activations.

    Training choices for a fit of a few hundred steps (a demo, not Gemma Scope's recipe):

    - The trainer sees the activations times one scalar (centred mean squared norm = ``d_in``); the scalar is
      folded into the weights afterwards (``fold_activation_norm_scaling_factor``), so the result does not
      depend on the activations' scale. ``b_dec`` starts at the data mean and ``b_enc`` centres the
      pre-activations (the encoder sees raw inputs since ``apply_b_dec_to_input=False``).
    - Sparsity: sae-lens' ``"tanh"`` loss (Anthropic) by default. DeepMind's ``"step"`` loss only moves the
      threshold (by at most ~lr per Adam step), which in 300 steps cannot keep up with the growing encoder:
      L0 stayed near d_sae. ``pre_act_loss_coefficient`` (Anthropic's loss on dead latents) keeps most latents
      alive.

    Deterministic for ``seed`` (the global torch RNG is left untouched). No wandb, no network, no checkpoints.
    """
    from sae_lens import (
        JumpReLUSAE,
        JumpReLUSAEConfig,
        JumpReLUTrainingSAE,
        JumpReLUTrainingSAEConfig,
        LoggingConfig,
        SAETrainer,
    )
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.sae import SAEMetadata

    x_ND = torch.as_tensor(np.asarray(acts_ND), dtype=torch.float32)
    if x_ND.ndim != 2:
        raise ValueError(f"acts_ND must be 2-D (tokens, d_in), got shape {tuple(x_ND.shape)}")
    n, d_in = x_ND.shape
    if n < 2:
        raise ValueError(f"need at least 2 tokens to fit an SAE, got {n}")
    if not torch.isfinite(x_ND).all():
        raise ValueError("acts_ND has non-finite values; cannot fit an SAE")
    batch_size = max(1, min(int(batch_size), n))
    steps = int(steps)

    mean_D = x_ND.mean(0)
    centred_ms = float((x_ND - mean_D).pow(2).sum(-1).mean())
    scale = math.sqrt(d_in / centred_ms) if centred_ms > 0 else 1.0
    x_scaled_ND = x_ND * scale
    hook_name = hook_name_for_layer(layer)

    train_cfg = JumpReLUTrainingSAEConfig(
        d_in=d_in,
        d_sae=int(d_sae),
        dtype="float32",
        device="cpu",
        apply_b_dec_to_input=False,
        normalize_activations="none",
        jumprelu_init_threshold=float(init_threshold),
        jumprelu_bandwidth=float(bandwidth),
        jumprelu_sparsity_loss_mode=sparsity_loss_mode,
        jumprelu_ste_to_input=bool(ste_to_input),
        l0_coefficient=float(l0_coefficient),
        l0_warm_up_steps=max(1, steps // 10),
        pre_act_loss_coefficient=pre_act_loss_coefficient,
        metadata=SAEMetadata(model_name=model_name, hook_name=hook_name, neuronpedia_id=None),
    )
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * batch_size,
        train_batch_size_samples=batch_size,
        lr=float(lr),
        lr_end=float(lr) / 10,  # required: SAETrainer asserts lr_end is not None
        lr_scheduler_name="cosineannealing",
        device="cpu",
        autocast=False,
        dead_feature_window=max(1, steps // 10),
        feature_sampling_window=max(1, steps),
        n_checkpoints=0,
        checkpoint_path=None,
        save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),
    )
    log.info(
        "fitting demo JumpReLU SAE on %s: %d tokens, d_in %d, d_sae %d, %d steps of %d, lr %g, %s loss x %g",
        hook_name,
        n,
        d_in,
        d_sae,
        steps,
        batch_size,
        lr,
        sparsity_loss_mode,
        l0_coefficient,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        train_sae = JumpReLUTrainingSAE(train_cfg)
        with torch.no_grad():
            mean_scaled_D = mean_D * scale
            train_sae.b_dec.copy_(mean_scaled_D)
            train_sae.b_enc.copy_(-(mean_scaled_D @ train_sae.W_enc))
        trainer = SAETrainer(
            cfg=trainer_cfg, sae=train_sae, data_provider=_batches(x_scaled_ND, batch_size, seed)
        )
        train_sae = trainer.fit()

    with torch.no_grad():
        train_sae.threshold.data.clamp_(min=0.0)  # the trainer projects before each step, not after the last
        train_sae.fold_activation_norm_scaling_factor(scale)
    inf_cfg = JumpReLUSAEConfig.from_dict(train_sae.cfg.get_inference_sae_cfg_dict())
    sae: JumpReLUSAE = JumpReLUSAE(inf_cfg)
    sae.load_state_dict({k: v.detach().float().clone() for k, v in train_sae.state_dict().items()})
    sae.eval()

    metrics = transfer_metrics(sae, x_ND)
    log.info(
        "demo SAE on its training data: explained variance %.3f, mean L0 %.1f of %d, dead %.1f%%",
        metrics["explained_variance"],
        metrics["l0"],
        d_sae,
        100 * metrics["dead_frac"],
    )
    train_params = {
        "d_sae": int(d_sae),
        "steps": steps,
        "batch_size": batch_size,
        "lr": float(lr),
        "seed": int(seed),
        "l0_coefficient": float(l0_coefficient),
        "sparsity_loss_mode": sparsity_loss_mode,
        "pre_act_loss_coefficient": pre_act_loss_coefficient,
        "init_threshold": float(init_threshold),
        "bandwidth": float(bandwidth),
        "ste_to_input": bool(ste_to_input),
    }
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        sae.save_model(tmp)
        write_json(
            tmp / SOURCE_FILENAME,
            {
                "source": "demo",
                "layer": int(layer),
                "hook_name": hook_name,
                "model_name": model_name,
                "n_tokens": int(n),
                "input_scale": scale,
                "train": train_params,
                "train_metrics": metrics,
                "provenance": provenance(train_params),
            },
        )
    return out


# ----------------------------------------------------------------------------------------------------------
# Sparse codes
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SparseCodes:
    """SAE codes of N tokens in CSR form: token i's active latents are ``indices[offsets[i]:offsets[i+1]]``.

    Canonical form (checked on construction): latents strictly increasing within each token, so two
    ``SparseCodes`` holding the same codes hold the same arrays. Only non-zero activations are stored.
    """

    indices: np.ndarray  # int32, (nnz,)
    values: np.ndarray  # float32, (nnz,)
    offsets: np.ndarray  # int64, (N+1,)
    d_sae: int

    def __post_init__(self) -> None:
        idx = np.ascontiguousarray(self.indices, dtype=np.int32)
        val = np.ascontiguousarray(self.values, dtype=np.float32)
        off = np.ascontiguousarray(self.offsets, dtype=np.int64)
        object.__setattr__(self, "indices", idx)
        object.__setattr__(self, "values", val)
        object.__setattr__(self, "offsets", off)
        object.__setattr__(self, "d_sae", int(self.d_sae))
        if idx.ndim != 1 or val.ndim != 1 or off.ndim != 1:
            raise ValueError("indices, values and offsets must be 1-D")
        if idx.shape != val.shape:
            raise ValueError(f"indices ({idx.size}) and values ({val.size}) differ in length")
        if off.size < 1 or off[0] != 0 or off[-1] != idx.size:
            raise ValueError(f"offsets must start at 0 and end at nnz={idx.size}")
        if np.any(np.diff(off) < 0):
            raise ValueError("offsets must be non-decreasing")
        if self.d_sae < 1:
            raise ValueError(f"d_sae must be >= 1, got {self.d_sae}")
        if idx.size:
            if idx.min() < 0 or idx.max() >= self.d_sae:
                raise ValueError(f"latent indices must lie in [0, {self.d_sae})")
            keys = self.token_ids().astype(np.int64) * self.d_sae + idx
            if np.any(np.diff(keys) <= 0):
                raise ValueError("latents must be strictly increasing within each token (canonical CSR)")

    # -- shape -------------------------------------------------------------------------------------------
    @property
    def n_tokens(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    @property
    def l0_N(self) -> np.ndarray:
        """Number of active latents per token (int64)."""
        return np.diff(self.offsets)

    def token_ids(self) -> np.ndarray:
        """Token index of every stored entry, (nnz,) int64."""
        return np.repeat(np.arange(self.n_tokens, dtype=np.int64), self.l0_N)

    # -- conversions -------------------------------------------------------------------------------------
    def to_dense(self, dtype: Any = np.float32) -> np.ndarray:
        """Dense codes_NF (N, d_sae)."""
        codes_NF = np.zeros((self.n_tokens, self.d_sae), dtype=dtype)
        codes_NF[self.token_ids(), self.indices] = self.values
        return codes_NF

    @classmethod
    def from_dense(cls, codes_NF: np.ndarray | torch.Tensor) -> SparseCodes:
        if isinstance(codes_NF, torch.Tensor):
            codes_NF = codes_NF.detach().float().cpu().numpy()
        codes_NF = np.asarray(codes_NF)
        if codes_NF.ndim != 2:
            raise ValueError(f"codes_NF must be 2-D, got shape {codes_NF.shape}")
        rows, cols = np.nonzero(codes_NF)
        offsets = np.zeros(codes_NF.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=codes_NF.shape[0]), out=offsets[1:])
        return cls(cols.astype(np.int32), codes_NF[rows, cols].astype(np.float32), offsets, codes_NF.shape[1])

    @classmethod
    def concatenate(cls, parts: list[SparseCodes]) -> SparseCodes:
        """Stack the tokens of several ``SparseCodes`` (same d_sae) in order."""
        if not parts:
            raise ValueError("nothing to concatenate")
        d_sae = parts[0].d_sae
        if any(p.d_sae != d_sae for p in parts):
            raise ValueError(
                f"cannot concatenate codes of different widths {sorted({p.d_sae for p in parts})}"
            )
        shifts = np.cumsum([0] + [p.nnz for p in parts[:-1]])
        offsets = np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, shifts, strict=True)])
        return cls(
            np.concatenate([p.indices for p in parts]),
            np.concatenate([p.values for p in parts]),
            offsets,
            d_sae,
        )

    def slice_tokens(self, start: int, stop: int) -> SparseCodes:
        """Codes of tokens ``start:stop`` (a copy)."""
        start, stop, _ = slice(start, stop).indices(self.n_tokens)
        stop = max(stop, start)
        lo, hi = int(self.offsets[start]), int(self.offsets[stop])
        return SparseCodes(
            self.indices[lo:hi].copy(),
            self.values[lo:hi].copy(),
            self.offsets[start : stop + 1] - lo,
            self.d_sae,
        )

    def take(self, rows: np.ndarray) -> SparseCodes:
        """Codes of the token rows ``rows`` (any order, repeats allowed), as a new SparseCodes."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        take = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return SparseCodes(self.indices[take], self.values[take], offsets, self.d_sae)

    # -- per-latent statistics -----------------------------------------------------------------------------
    def fire_count_F(self) -> np.ndarray:
        """How many tokens each latent fires on, (d_sae,) int64."""
        return np.bincount(self.indices, minlength=self.d_sae).astype(np.int64)

    def sum_F(self) -> np.ndarray:
        """Sum of each latent's activation over tokens, (d_sae,) float64."""
        return np.bincount(self.indices, weights=self.values.astype(np.float64), minlength=self.d_sae)

    def mean_F(self) -> np.ndarray:
        """Mean activation of each latent over all tokens (zeros included), (d_sae,) float64."""
        return self.sum_F() / max(self.n_tokens, 1)

    def sq_norm_N(self) -> np.ndarray:
        """Squared L2 norm of each token's code, (N,) float64."""
        v = self.values.astype(np.float64)
        return np.bincount(self.token_ids(), weights=v * v, minlength=self.n_tokens)


def _rows(acts_ND: Any, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of a numpy array, torch tensor or h5py dataset, as a CPU/torch tensor."""
    if isinstance(acts_ND, torch.Tensor):
        return acts_ND[start:stop]
    return torch.from_numpy(np.ascontiguousarray(acts_ND[start:stop]))


def encode(sae: SAE, acts_ND: np.ndarray | torch.Tensor, *, batch_size: int = 4096) -> SparseCodes:
    """Batched ``sae.encode`` under ``torch.inference_mode``; returns canonical CSR codes."""
    n = int(acts_ND.shape[0])
    d_sae = int(sae.cfg.d_sae)
    if acts_ND.ndim != 2 or int(acts_ND.shape[1]) != int(sae.cfg.d_in):
        raise ValueError(f"acts_ND must have shape (N, {sae.cfg.d_in}), got {tuple(acts_ND.shape)}")
    parts: list[SparseCodes] = []
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            x_BD = _rows(acts_ND, start, start + batch_size)
            z_BF = sae.encode(x_BD.to(device=sae.device, dtype=sae.dtype))
            rows, cols = torch.nonzero(z_BF, as_tuple=True)
            vals = z_BF[rows, cols].float().cpu().numpy()
            counts = torch.bincount(rows, minlength=z_BF.shape[0]).cpu().numpy()
            offsets = np.zeros(z_BF.shape[0] + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])
            parts.append(SparseCodes(cols.cpu().numpy().astype(np.int32), vals, offsets, d_sae))
    if not parts:
        return SparseCodes(np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(1, np.int64), d_sae)
    return SparseCodes.concatenate(parts)


# ----------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------


def latent_density(codes: SparseCodes) -> np.ndarray:
    """Firing frequency of each latent (fraction of tokens it is non-zero on), (d_sae,) float64."""
    return codes.fire_count_F() / max(codes.n_tokens, 1)


def _safe_cosine(dot: np.ndarray, na: np.ndarray, nb: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Cosine with the conventions: both vectors zero -> 1, exactly one zero -> 0. Never NaN."""
    za, zb = na <= eps, nb <= eps
    cos = np.where(za | zb, 0.0, dot / np.where(za | zb, 1.0, na * nb))
    cos = np.where(za & zb, 1.0, cos)
    return np.clip(cos, -1.0, 1.0)


class TransferAccumulator:
    """:func:`transfer_metrics` over a stream of batches (same numbers as on their concatenation, up to the
    order of float summation): the fused extraction path adds one extraction batch at a time."""

    def __init__(self, d_sae: int, *, dense_threshold: float = DENSE_THRESHOLD) -> None:
        from sae_lens.evals import ExplainedVarianceCalculator

        self.d_sae = int(d_sae)
        self.dense_threshold = dense_threshold
        self.ev = ExplainedVarianceCalculator()
        self.cos_sum = self.ratio_sum = self.mse_sum = 0.0
        self.n = 0
        self.fire_F = np.zeros(self.d_sae, dtype=np.int64)
        self.l0_sum = 0
        self.n_zero = 0

    def add(self, sae: SAE, x_BD: np.ndarray | torch.Tensor, codes: SparseCodes) -> None:
        """Add tokens ``x_BD`` and their codes (``encode(sae, x_BD)``)."""
        n = int(x_BD.shape[0])
        if codes.n_tokens != n or codes.d_sae != self.d_sae:
            raise ValueError(
                f"codes ({codes.n_tokens} tokens, d_sae {codes.d_sae}) do not match acts ({n} tokens) "
                f"and SAE (d_sae {self.d_sae})"
            )
        if n == 0:
            return
        with torch.inference_mode():
            x = _rows(x_BD, 0, n).to(device=sae.device, dtype=torch.float32)
            z = torch.from_numpy(codes.to_dense()).to(device=sae.device, dtype=sae.dtype)
            x_hat = sae.decode(z).float()
            self.ev.add_batch(sae_output=x_hat.double(), hidden_acts=x.double())  # float64 sums
            x64, xh64 = x.double().cpu().numpy(), x_hat.double().cpu().numpy()
        nx, nxh = np.linalg.norm(x64, axis=1), np.linalg.norm(xh64, axis=1)
        self.cos_sum += float(_safe_cosine((x64 * xh64).sum(1), nx, nxh).sum())
        self.ratio_sum += float((nxh / np.where(nx < 1e-4, 1.0, nx)).sum())
        self.mse_sum += float(((x64 - xh64) ** 2).sum())
        self.n += n
        self.fire_F += codes.fire_count_F()
        l0_N = codes.l0_N
        self.l0_sum += int(l0_N.sum())
        self.n_zero += int((l0_N == 0).sum())

    def _explained_variance(self) -> float:
        """sae-lens' ExplainedVarianceCalculator.compute, with a *relative* test for constant inputs: where the
        total variance is below 1e-9 of the mean squared norm (e.g. BOS, the same vector in every example) it is
        rounding noise, and explained variance is 1 if the reconstruction is exact, else 0 (sae-lens' rule)."""
        ev = self.ev
        mean_sq = ev.sum_squared_norm / ev.num_samples
        total_var = mean_sq - float((ev.sum_x / ev.num_samples).pow(2).sum())
        mse = ev.sum_squared_residual / ev.num_samples
        if total_var <= max(1e-10, 1e-9 * mean_sq):
            return 1.0 if mse <= max(1e-10, 1e-9 * mean_sq) else 0.0
        return 1.0 - mse / total_var

    def result(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("transfer_metrics got no tokens")
        ev = self._explained_variance()
        freq_F = self.fire_F / self.n
        return {
            "n_tokens": float(self.n),
            "d_sae": float(self.d_sae),
            "explained_variance": ev,
            "fvu": 1.0 - ev,
            "mse": self.mse_sum / self.n,
            "l0": self.l0_sum / self.n,
            "cosine": self.cos_sum / self.n,
            "norm_ratio": self.ratio_sum / self.n,
            "dead_frac": float((freq_F == 0).mean()),
            "dense_frac": float((freq_F > self.dense_threshold).mean()),
            "n_zero_code": float(self.n_zero),
        }


def transfer_metrics(
    sae: SAE,
    acts_ND: np.ndarray | torch.Tensor,
    codes: SparseCodes | None = None,
    *,
    dense_threshold: float = DENSE_THRESHOLD,
    batch_size: int = 2048,
) -> dict[str, float]:
    """How well ``sae`` reconstructs ``acts_ND`` (an SAE transferred to another model, Kissane et al.).

    - ``fvu`` / ``explained_variance``: global, as ``sae_lens.evals.ExplainedVarianceCalculator``:
      FVU = sum_i ||x_i - x̂_i||² / sum_i ||x_i - mean(x)||²; explained_variance = 1 - FVU.
    - ``mse``: mean over tokens of ||x - x̂||² (sum over dims, as sae-lens).
    - ``l0``: mean active latents per token; ``cosine``: mean cos(x, x̂) (both zero -> 1, one zero -> 0);
      ``norm_ratio``: mean ||x̂||/||x|| (denominator 1 where ||x|| < 1e-4, as sae-lens' ``l2_ratio``).
    - ``dead_frac`` (never fires), ``dense_frac`` (fires on > ``dense_threshold`` of tokens).
    - ``n_tokens``, ``n_zero_code`` (tokens whose code is all zeros; they reconstruct to b_dec, no NaN).
    """
    n = int(acts_ND.shape[0])
    if n == 0:
        raise ValueError("transfer_metrics got no tokens")
    if codes is None:
        codes = encode(sae, acts_ND, batch_size=batch_size)
    if codes.n_tokens != n or codes.d_sae != int(sae.cfg.d_sae):
        raise ValueError(
            f"codes ({codes.n_tokens} tokens, d_sae {codes.d_sae}) do not match acts ({n} tokens) "
            f"and SAE (d_sae {sae.cfg.d_sae})"
        )
    acc = TransferAccumulator(codes.d_sae, dense_threshold=dense_threshold)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        acc.add(sae, _rows(acts_ND, start, stop), codes.slice_tokens(start, stop))
    return acc.result()


def neuronpedia_url(neuronpedia_id: str | None, latent: int) -> str:
    """Link to a latent's Neuronpedia page, or "" when the SAE has no Neuronpedia id (never fetched)."""
    if not neuronpedia_id:
        return ""
    return f"{NEURONPEDIA_BASE}/{neuronpedia_id.strip('/')}/{int(latent)}"


def _js_divergence_base2(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence in bits (log base 2), so it lies in [0, 1]; inputs need not be normalised.

    Negative entries are treated by magnitude. Both all-zero -> 0; exactly one all-zero -> 1 (maximal).
    Computed as 0.5·KL(p‖m) + 0.5·KL(q‖m) with m = (p+q)/2, which is exactly symmetric in (p, q).
    """
    p = np.abs(np.asarray(p, dtype=np.float64))
    q = np.abs(np.asarray(q, dtype=np.float64))
    sp, sq = p.sum(), q.sum()
    if sp <= 0 and sq <= 0:
        return 0.0
    if sp <= 0 or sq <= 0:
        return 1.0
    p, q = p / sp, q / sq
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return float(np.clip(0.5 * kl(p) + 0.5 * kl(q), 0.0, 1.0))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; when either vector is constant: 1 if the vectors are equal, else 0 (never NaN)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    da, db = a - a.mean(), b - b.mean()
    na, nb = np.sqrt((da * da).sum()), np.sqrt((db * db).sum())
    if na == 0 or nb == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.clip((da * db).sum() / (na * nb), -1.0, 1.0))


#: a mean-activation change smaller than this fraction of the largest mean activation is float noise (the
#: same activations encoded in two jobs differ in the last bits), not a gained or lost latent
MEAN_CHANGE_RTOL = 1e-5


def _top_changes(
    direction: str,
    delta_F: np.ndarray,
    k: int,
    table: dict[str, np.ndarray],
    neuronpedia_id: str | None,
    tol: float = 0.0,
) -> pd.DataFrame:
    latents = np.flatnonzero(delta_F > tol)
    order = np.lexsort((latents, -delta_F[latents]))  # largest change first, ties by latent index
    latents = latents[order][:k]
    return pd.DataFrame(
        {
            "direction": np.array([direction] * len(latents), dtype=object),
            "latent": latents.astype(np.int64),
            **{name: col[latents] for name, col in table.items()},
            "neuronpedia_url": [neuronpedia_url(neuronpedia_id, int(i)) for i in latents],
        }
    )


SHIFT_COLUMNS = ["direction", "latent", "freq_a", "freq_b", "mean_a", "mean_b", "neuronpedia_url"]


def shift_metrics(
    codes_a: SparseCodes,
    codes_b: SparseCodes,
    *,
    top_k: int = 20,
    neuronpedia_id: str | None = None,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Compare SAE codes of the SAME N tokens under model a (base) and model b (adapted).

    Metrics (never NaN):
    - ``token_cosine``: mean per-token cosine of codes; both codes zero -> 1 (counted in ``n_both_zero``),
      exactly one zero -> 0 (counted in ``n_one_zero``).
    - ``mean_code_cosine``: cosine of the mean codes (the original notebooks' metric).
    - ``jaccard``: mean per-token Jaccard index of active-latent sets (both empty -> 1).
    - ``l2``: mean per-token L2 distance between codes.
    - ``mean_code_pearson``: Pearson correlation of the mean codes.
    - ``js_divergence``: Jensen–Shannon divergence, base 2 (in [0, 1]), between the mean-activation vectors
      normalised to sum 1.
    - ``freq_js_divergence``: the same between firing-frequency distributions.
    - ``l0_a``, ``l0_b``, ``n_tokens``.

    The DataFrame lists the latents gained and lost from a to b: the ``top_k`` largest increases
    (``freq_gained``, ``mean_gained``) and decreases (``freq_lost``, ``mean_lost``) in firing frequency and in
    mean activation (over all tokens), with columns ``SHIFT_COLUMNS``.
    """
    if codes_a.n_tokens != codes_b.n_tokens:
        raise ValueError(
            f"shift_metrics compares the same tokens under two models, got {codes_a.n_tokens} and "
            f"{codes_b.n_tokens} tokens"
        )
    if codes_a.d_sae != codes_b.d_sae:
        raise ValueError(f"codes come from SAEs of different widths ({codes_a.d_sae} vs {codes_b.d_sae})")
    n, d_sae = codes_a.n_tokens, codes_a.d_sae
    denom = max(n, 1)

    # Per-token overlap without densifying: match (token, latent) keys of both canonical CSR codes.
    tok_a, tok_b = codes_a.token_ids(), codes_b.token_ids()
    keys_a = tok_a * d_sae + codes_a.indices
    keys_b = tok_b * d_sae + codes_b.indices
    _, ia, ib = np.intersect1d(keys_a, keys_b, assume_unique=True, return_indices=True)
    tok_common = tok_a[ia]
    va, vb = codes_a.values[ia].astype(np.float64), codes_b.values[ib].astype(np.float64)
    dot_N = np.bincount(tok_common, weights=va * vb, minlength=n)
    inter_N = np.bincount(tok_common, minlength=n).astype(np.float64)
    l0a_N, l0b_N = codes_a.l0_N.astype(np.float64), codes_b.l0_N.astype(np.float64)
    sqa_N, sqb_N = codes_a.sq_norm_N(), codes_b.sq_norm_N()
    za, zb = l0a_N == 0, l0b_N == 0

    cos_N = _safe_cosine(dot_N, np.sqrt(sqa_N), np.sqrt(sqb_N))
    union_N = l0a_N + l0b_N - inter_N
    jac_N = np.where(union_N > 0, inter_N / np.where(union_N > 0, union_N, 1.0), 1.0)
    # ||a-b||² = (a-only part) + (b-only part) + (shared latents), without cancellation for equal codes
    l2sq_N = (
        (sqa_N - np.bincount(tok_common, weights=va * va, minlength=n))
        + (sqb_N - np.bincount(tok_common, weights=vb * vb, minlength=n))
        + np.bincount(tok_common, weights=(va - vb) ** 2, minlength=n)
    )
    l2_N = np.sqrt(np.clip(l2sq_N, 0.0, None))

    mean_a, mean_b = codes_a.mean_F(), codes_b.mean_F()
    freq_a, freq_b = latent_density(codes_a), latent_density(codes_b)
    norm_ma, norm_mb = np.linalg.norm(mean_a), np.linalg.norm(mean_b)
    metrics = {
        "n_tokens": float(n),
        "token_cosine": float(cos_N.sum() / denom) if n else 1.0,
        "mean_code_cosine": float(_safe_cosine(np.dot(mean_a, mean_b), norm_ma, norm_mb)),
        "jaccard": float(jac_N.sum() / denom) if n else 1.0,
        "l2": float(l2_N.sum() / denom),
        "mean_code_pearson": _pearson(mean_a, mean_b),
        "js_divergence": _js_divergence_base2(mean_a, mean_b),
        "freq_js_divergence": _js_divergence_base2(freq_a, freq_b),
        "n_both_zero": float((za & zb).sum()),
        "n_one_zero": float((za ^ zb).sum()),
        "l0_a": float(l0a_N.mean()) if n else 0.0,
        "l0_b": float(l0b_N.mean()) if n else 0.0,
    }

    table = {"freq_a": freq_a, "freq_b": freq_b, "mean_a": mean_a, "mean_b": mean_b}
    scale = max(float(np.abs(mean_a).max(initial=0.0)), float(np.abs(mean_b).max(initial=0.0)))
    mean_tol = MEAN_CHANGE_RTOL * scale
    frames = [
        _top_changes("freq_gained", freq_b - freq_a, top_k, table, neuronpedia_id),
        _top_changes("freq_lost", freq_a - freq_b, top_k, table, neuronpedia_id),
        _top_changes("mean_gained", mean_b - mean_a, top_k, table, neuronpedia_id, mean_tol),
        _top_changes("mean_lost", mean_a - mean_b, top_k, table, neuronpedia_id, mean_tol),
    ]
    non_empty = [f for f in frames if len(f)]
    changes = pd.concat(non_empty, ignore_index=True) if non_empty else frames[0]
    return metrics, changes[SHIFT_COLUMNS]
