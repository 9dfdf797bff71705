"""SAEs trained on a model's own residual stream (the VLM's decoder), through sae-lens' ``SAETrainer``.

Activations stream from the model inside the job: a forward hook on block L (repshift layer L, what
``blocks.L.hook_resid_post`` reads) captures each batch, positions are sorted into *image* tokens, *prompt*
tokens (text positions of an image input) and *caption* tokens (text-only inputs), a :class:`TokenMixer`
serves them in the configured ratio, and sae-lens' ``mixing_buffer`` shuffles them before the trainer sees
them. BOS, pads and special tokens are never trained on. Nothing dense goes to disk.

Architectures (``sae_training.architecture``), all sae-lens training classes:

- ``standard``: ReLU with λ·Σ f_i‖W_dec,i‖ (the Line of Sight recipe: decoder rows initialised at norm
  ``decoder_init_norm`` with a tied encoder — sae-lens' ``decoder_init_norm`` — penalty warm-up
  ``l1_warm_up_steps``, linear LR decay to 0 over the last ``lr_decay`` of training — ``lr_decay_steps`` —
  gradient-norm clipping at 1.0, which ``SAETrainer`` always applies);
- ``topk`` / ``batchtopk``: k latents per token / on average per batch (BatchTopK saves as JumpReLU);
- ``jumprelu``: JumpReLU with an L0 penalty.

Scaling: one constant per layer, s = √d / E‖x‖, is estimated on the stream first (sae-lens'
``ActivationScaler.estimate_scaling_factor``); the trainer trains on s·x and folds s into the weights at the
end (``fold_activation_norm_scaling_factor``), so the saved SAE reads and writes activations in the model's
own units. s is stored beside the SAE (``repshift_source.json``, key ``input_scale``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from repshift.formats.activations_h5 import POSITION_KINDS
from repshift.formats.atomic import atomic_dir, atomic_path, write_json
from repshift.formats.provenance import provenance
from repshift.sae.load import SOURCE_FILENAME, hook_name_for_layer

log = logging.getLogger(__name__)

ARCHITECTURES = ("standard", "topk", "batchtopk", "jumprelu")
#: Token kinds a training mix draws from.
TOKEN_KINDS = ("image", "caption", "prompt")
#: Columns of the training-curve TSV, in order.
CURVE_COLUMNS = ("step", "tokens", "loss", "mse", "penalty", "l0", "fvu", "dead_frac", "lr", "coefficient")


@dataclass(frozen=True)
class TrainSpec:
    """One SAE training setup (config key ``sae_training.train``)."""

    architecture: str = "standard"
    expansion: int = 8  # d_sae = expansion x d_model
    tokens: int = 100_000_000
    batch_size: int = 4096
    lr: float = 5e-5
    l1_coefficient: float = 5.0  # standard: λ
    k: int = 64  # topk / batchtopk
    l0_coefficient: float = 1.0  # jumprelu
    penalty_warmup: float = 0.05  # fraction of steps over which the penalty ramps up
    lr_decay: float = 0.2  # fraction of steps (at the end) over which the LR decays linearly to 0
    decoder_init_norm: float = 0.1
    buffer_tokens: int = 262_144
    norm_batches: int = 100
    token_mix: Mapping[str, float] = field(
        default_factory=lambda: {"image": 0.5, "caption": 0.25, "prompt": 0.25}
    )
    log_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"sae_training.train.architecture {self.architecture!r} unknown; use one of {ARCHITECTURES}"
            )
        bad = sorted(set(self.token_mix) - set(TOKEN_KINDS))
        if bad or not any(float(v) > 0 for v in self.token_mix.values()):
            raise ValueError(
                f"sae_training.train.token_mix must weight some of {TOKEN_KINDS} (> 0), got {dict(self.token_mix)}"
            )
        if self.tokens < self.batch_size:
            raise ValueError(
                f"sae_training.train.tokens ({self.tokens}) is below one batch ({self.batch_size})"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"sae_training.train: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(d))

    @property
    def steps(self) -> int:
        return self.tokens // self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: (dict(v) if isinstance(v := getattr(self, f.name), Mapping) else v) for f in fields(self)
        }


def make_training_sae(spec: TrainSpec, d_in: int, *, hook_name: str, model_name: str, device: str = "cpu"):
    """A fresh sae-lens training SAE of ``spec.architecture`` (raw-unit normalisation is done by the trainer)."""
    import sae_lens
    from sae_lens.saes.sae import SAEMetadata

    warm = max(0, int(spec.penalty_warmup * spec.steps))
    common = dict(
        d_in=int(d_in),
        d_sae=int(spec.expansion * d_in),
        dtype="float32",
        device=device,
        apply_b_dec_to_input=True,
        normalize_activations="none",
        decoder_init_norm=spec.decoder_init_norm,
        metadata=SAEMetadata(model_name=model_name, hook_name=hook_name),
    )
    if spec.architecture == "standard":
        cfg = sae_lens.StandardTrainingSAEConfig(
            **common, l1_coefficient=spec.l1_coefficient, l1_warm_up_steps=warm
        )
        return sae_lens.StandardTrainingSAE(cfg)
    if spec.architecture == "topk":
        return sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(**common, k=int(spec.k)))
    if spec.architecture == "batchtopk":
        return sae_lens.BatchTopKTrainingSAE(sae_lens.BatchTopKTrainingSAEConfig(**common, k=float(spec.k)))
    cfg = sae_lens.JumpReLUTrainingSAEConfig(
        **common,
        l0_coefficient=spec.l0_coefficient,
        l0_warm_up_steps=warm,
        jumprelu_sparsity_loss_mode="tanh",
    )
    return sae_lens.JumpReLUTrainingSAE(cfg)


def trainer_config(spec: TrainSpec, device: str = "cpu"):
    """sae-lens ``SAETrainerConfig``: Adam (0.9, 0.999), constant LR then linear decay to 0 over the last
    ``lr_decay`` of steps; no wandb, no checkpoints."""
    from sae_lens import LoggingConfig
    from sae_lens.config import SAETrainerConfig

    steps = spec.steps
    return SAETrainerConfig(
        total_training_samples=steps * spec.batch_size,
        train_batch_size_samples=spec.batch_size,
        lr=spec.lr,
        lr_end=spec.lr,  # constant schedule; the decay goes from lr to 0
        lr_scheduler_name="constant",
        lr_decay_steps=int(spec.lr_decay * steps),
        adam_beta1=0.9,
        adam_beta2=0.999,
        device=device,
        autocast=False,
        dead_feature_window=max(1, min(1000, steps // 5)),
        feature_sampling_window=max(1, steps),
        n_checkpoints=0,
        checkpoint_path=None,
        save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=spec.norm_batches,
    )


def _curve_trainer_class():
    from sae_lens import SAETrainer

    class CurveTrainer(SAETrainer):
        """``SAETrainer`` that records loss, L0, FVU, dead fraction, LR and penalty every ``log_every`` steps
        (through ``step``, its public per-step seam)."""

        log_every = 100
        curve: list[dict[str, float]]

        @torch.no_grad()
        def _record(self, out) -> None:
            x, x_hat = out.sae_in.float(), out.sae_out.float()
            resid = (x - x_hat).pow(2).sum(-1).mean()
            var = (x - x.mean(0)).pow(2).sum(-1).mean()
            penalty = sum(float(v) for k, v in out.losses.items() if k != "mse_loss")
            coeffs = self.get_coefficients()
            self.curve.append(
                {
                    "step": self.n_training_steps,
                    "tokens": self.n_training_samples,
                    "loss": float(out.loss),
                    "mse": float(out.losses.get("mse_loss", float("nan"))),
                    "penalty": penalty,
                    "l0": float((out.feature_acts != 0).float().sum(-1).mean()),
                    "fvu": float(resid / var) if var > 0 else float("nan"),
                    "dead_frac": float(self.dead_neurons.float().mean()),
                    "lr": float(self.optimizer.param_groups[0]["lr"]),
                    "coefficient": float(next(iter(coeffs.values()))) if coeffs else 0.0,
                }
            )

        def step(self, batch):
            out = super().step(batch)
            last = self.n_training_samples >= self.cfg.total_training_samples
            if self.n_training_steps % self.log_every == 0 or last:
                self._record(out)
            return out

    return CurveTrainer


def fit_sae(
    batches: Iterator[torch.Tensor],
    spec: TrainSpec,
    *,
    d_in: int,
    layer: int,
    model_name: str,
    device: str = "cpu",
) -> tuple[Any, float, pd.DataFrame]:
    """Estimate the scaling constant on ``batches``, fit an SAE on them, fold the constant in.

    ``batches``: an endless iterator of ``(spec.batch_size, d_in)`` tensors in the model's units. Returns the
    inference SAE (raw units), the constant s (√d / E‖x‖) and the training curve. Deterministic for
    ``spec.seed`` given the same batches (the global torch RNG is left untouched).
    """
    from sae_lens.training.activation_scaler import ActivationScaler

    scaler = ActivationScaler()
    scaler.estimate_scaling_factor(
        d_in=d_in, data_provider=batches, n_batches_for_norm_estimate=spec.norm_batches
    )
    scale = float(scaler.scaling_factor)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(
            f"layer {layer}: activations have mean norm 0 or non-finite; cannot scale (s={scale})"
        )
    log.info("layer %d: scaling constant s = sqrt(d)/E|x| = %.6g (d=%d)", layer, scale, d_in)
    trainer_cls = _curve_trainer_class()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        train_sae = make_training_sae(
            spec, d_in, hook_name=hook_name_for_layer(layer), model_name=model_name, device=device
        )
        trainer = trainer_cls(cfg=trainer_config(spec, device), sae=train_sae, data_provider=batches)
        trainer.log_every = max(1, int(spec.log_every))
        trainer.curve = []
        trainer.activation_scaler = (
            scaler  # fit() skips its own estimate and folds s into the weights at the end
        )
        train_sae = trainer.fit()
    if trainer.activation_scaler.scaling_factor is not None:
        raise RuntimeError(
            "sae-lens did not fold the scaling constant into the SAE: check the sae-lens version"
        )
    sae = _to_inference(train_sae)
    return sae, scale, pd.DataFrame(trainer.curve, columns=list(CURVE_COLUMNS))


def _to_inference(train_sae):
    """The inference SAE of a training SAE (BatchTopK → JumpReLU), through sae-lens' own save/load."""
    import tempfile

    from sae_lens import SAE

    with tempfile.TemporaryDirectory() as tmp:
        train_sae.save_inference_model(tmp)
        sae = SAE.load_from_disk(tmp, device=str(train_sae.device))
    sae.eval()
    return sae


def save_trained_sae(sae, out_dir: str | Path, *, info: Mapping[str, Any]) -> Path:
    """``save_model`` + ``repshift_source.json`` (scaling constant, spec, token counts), atomically."""
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        sae.save_model(tmp)
        write_json(tmp / SOURCE_FILENAME, {"source": "trained", **info, "provenance": provenance(info)})
    return out


def write_curve(curve: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        curve.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


# -- the token stream ----------------------------------------------------------------------------------------
class TokenMixer:
    """Serves chunks of ``chunk`` tokens drawn from per-kind queues in a fixed ratio.

    ``add(kind, x_ND)`` queues a kind's tokens; ``ready()`` yields every chunk that all weighted queues can fill
    (``round(w_k · chunk)`` rows of kind k, in kind order). A queue holds at most ``cap`` rows: surplus rows of an
    over-supplied kind (e.g. 256 image tokens per image against a dozen caption tokens) are dropped at random.
    """

    def __init__(self, mix: Mapping[str, float], chunk: int, *, cap: int | None = None, seed: int = 0):
        total = sum(float(v) for v in mix.values())
        weights = {k: float(v) / total for k, v in mix.items() if float(v) > 0}
        self.counts = {k: int(round(w * chunk)) for k, w in weights.items()}
        self.counts = {k: n for k, n in self.counts.items() if n > 0}
        if not self.counts:
            raise ValueError(f"token mix {dict(mix)} gives no tokens in a chunk of {chunk}")
        self.cap = int(cap or 8 * chunk)
        self.queues: dict[str, list[torch.Tensor]] = {k: [] for k in self.counts}
        self.sizes = dict.fromkeys(self.counts, 0)
        self.gen = torch.Generator().manual_seed(int(seed))

    def add(self, kind: str, x_ND: torch.Tensor) -> None:
        if kind not in self.queues or x_ND.shape[0] == 0:
            return
        self.queues[kind].append(x_ND)
        self.sizes[kind] += int(x_ND.shape[0])
        if self.sizes[kind] > self.cap:
            allx = torch.cat(self.queues[kind])
            keep = torch.randperm(allx.shape[0], generator=self.gen)[: self.cap]
            self.queues[kind] = [allx[keep]]
            self.sizes[kind] = self.cap

    def ready(self) -> Iterator[torch.Tensor]:
        while all(self.sizes[k] >= n for k, n in self.counts.items()):
            parts = []
            for k, n in self.counts.items():
                allx = torch.cat(self.queues[k])
                parts.append(allx[:n])
                self.queues[k] = [allx[n:]]
                self.sizes[k] -= n
            yield torch.cat(parts)


def split_kinds(kinds_BT: np.ndarray, is_image_B: np.ndarray) -> dict[str, np.ndarray]:
    """Masks of image / prompt / caption positions: image tokens and the text positions of image inputs, and the
    text positions of text-only inputs. BOS, pads and special tokens are in none of them."""
    text = kinds_BT == POSITION_KINDS["text"]
    img_row = np.asarray(is_image_B, dtype=bool)[:, None]
    return {
        "image": kinds_BT == POSITION_KINDS["image"],
        "prompt": text & img_row,
        "caption": text & ~img_row,
    }


def model_batches(
    adapter,
    rows: pd.DataFrame,
    layer: int,
    *,
    image_dir: str | None,
    batch_size: int,
    max_tokens: int,
    seed: int,
    kinds: Iterable[str] = TOKEN_KINDS,
) -> Iterator[tuple[dict[str, torch.Tensor], int]]:
    """Endless passes over ``rows`` (reshuffled each epoch): per forward batch, layer ``layer``'s tokens by kind
    (float32, on CPU) and the batch's token count. Image and text batches alternate; only kinds in ``kinds`` are
    read (a mix without images never decodes one)."""
    from repshift.data.images import load_example_image
    from repshift.models.extract import run_capture

    kinds = set(kinds)
    want_images = bool(kinds & {"image", "prompt"})
    text_rows = rows[rows["modality"] == "text"] if "caption" in kinds else rows.iloc[:0]
    image_rows = rows[rows["modality"] == "image"] if want_images else rows.iloc[:0]
    if text_rows.empty and image_rows.empty:
        raise ValueError(f"no rows to train on for token kinds {sorted(kinds)}: check sae_training.dataset")
    rng = np.random.default_rng(seed)
    while True:
        tb = _chunks(text_rows.iloc[rng.permutation(len(text_rows))], batch_size)
        ib = _chunks(image_rows.iloc[rng.permutation(len(image_rows))], batch_size)
        for chunk in _interleave(ib, tb):
            is_image = (chunk["modality"] == "image").to_numpy()
            if is_image.all():
                images = [load_example_image(r, image_dir) for _, r in chunk.iterrows()]
                batch = adapter.image_batch(images, adapter.spec.image_prompt)
            else:
                batch = adapter.text_batch([adapter.text_ids(str(t), max_tokens)[0] for t in chunk["text"]])
            hidden_BTD = run_capture(adapter, batch, [layer])[layer].float().cpu()
            masks = split_kinds(batch.kinds_BT, is_image)
            yield (
                {k: hidden_BTD[torch.from_numpy(m)] for k, m in masks.items() if k in kinds},
                int(sum(m.sum() for m in masks.values())),
            )


def _chunks(df: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [df.iloc[s : s + size] for s in range(0, len(df), size)]


def _interleave(a: list, b: list) -> Iterator:
    for i in range(max(len(a), len(b))):
        if i < len(a):
            yield a[i]
        if i < len(b):
            yield b[i]


def mixed_stream(
    source: Iterator[tuple[dict[str, torch.Tensor], int]], spec: TrainSpec, *, chunk: int = 1024
) -> Iterator[torch.Tensor]:
    """Shuffled training batches: the source's tokens through a :class:`TokenMixer`, then sae-lens'
    ``mixing_buffer`` (buffer of ``spec.buffer_tokens``, half kept for mixing)."""
    from sae_lens.training.mixing_buffer import mixing_buffer

    mixer = TokenMixer(spec.token_mix, chunk, seed=spec.seed)

    def mixed() -> Iterator[torch.Tensor]:
        for by_kind, _ in source:
            for kind, x in by_kind.items():
                mixer.add(kind, x)
            yield from mixer.ready()

    buffer = max(int(spec.buffer_tokens), 2 * spec.batch_size)
    return mixing_buffer(buffer, spec.batch_size, mixed(), mix_fraction=0.5)


def train_layer_sae(
    adapter,
    rows: pd.DataFrame,
    layer: int,
    spec: TrainSpec,
    *,
    image_dir,
    extraction: Mapping[str, Any],
    model_name: str,
):
    """train_vlm_sae: stream ``rows`` through ``adapter`` at ``layer``, mix and shuffle the token kinds, fit the SAE.

    ``extraction``: the config's ``extraction`` section (batch_size, max_tokens). Returns ``(sae, input_scale, curve)``.
    """
    source = model_batches(
        adapter, rows, layer, image_dir=image_dir, batch_size=extraction["batch_size"],
        max_tokens=extraction["max_tokens"], seed=spec.seed, kinds=[k for k, v in spec.token_mix.items() if v > 0],
    )  # fmt: skip
    batches = mixed_stream(source, spec, chunk=min(1024, spec.batch_size))
    return fit_sae(
        batches, spec, d_in=adapter.d_model, layer=layer, model_name=model_name, device=str(adapter.device)
    )
