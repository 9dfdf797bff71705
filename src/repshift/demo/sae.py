"""The demo preset's SAEs: a tiny JumpReLU SAE per layer fit with sae-lens' trainer on demo activations."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from repshift.formats.atomic import atomic_dir, write_json
from repshift.formats.provenance import provenance
from repshift.sae.load import SOURCE_FILENAME, hook_name_for_layer
from repshift.sae.metrics import transfer_metrics

if TYPE_CHECKING:
    from sae_lens import JumpReLUSAE


log = logging.getLogger(__name__)


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
