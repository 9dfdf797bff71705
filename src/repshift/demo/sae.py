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
    x_ND = _checked_acts(acts_ND)
    n, d_in = x_ND.shape
    mean_D = x_ND.mean(0)
    centred_ms = float((x_ND - mean_D).pow(2).sum(-1).mean())
    scale = math.sqrt(d_in / centred_ms) if centred_ms > 0 else 1.0
    hook_name = hook_name_for_layer(layer)
    train_params = {
        "d_sae": int(d_sae),
        "steps": int(steps),
        "batch_size": max(1, min(int(batch_size), n)),
        "lr": float(lr),
        "seed": int(seed),
        "l0_coefficient": float(l0_coefficient),
        "sparsity_loss_mode": sparsity_loss_mode,
        "pre_act_loss_coefficient": pre_act_loss_coefficient,
        "init_threshold": float(init_threshold),
        "bandwidth": float(bandwidth),
        "ste_to_input": bool(ste_to_input),
    }
    log.info("fitting demo JumpReLU SAE on %s: %d tokens, d_in %d, %s", hook_name, n, d_in, train_params)
    sae = _fit(
        x_ND * scale, mean_D * scale, scale, _configs(d_in, hook_name, model_name, train_params), train_params
    )
    metrics = transfer_metrics(sae, x_ND)
    log.info(
        "demo SAE on its training data: explained variance %.3f, mean L0 %.1f of %d, dead %.1f%%",
        metrics["explained_variance"],
        metrics["l0"],
        d_sae,
        100 * metrics["dead_frac"],
    )
    record = {"source": "demo", "layer": int(layer), "hook_name": hook_name, "model_name": model_name}
    record |= {"n_tokens": int(n), "input_scale": scale, "train": train_params, "train_metrics": metrics}
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        sae.save_model(tmp)
        write_json(tmp / SOURCE_FILENAME, {**record, "provenance": provenance(train_params)})
    return out


def _checked_acts(acts_ND) -> torch.Tensor:
    """(N, d_in) float32 tensor of at least 2 finite rows, or a ValueError saying which rule failed."""
    x_ND = torch.as_tensor(np.asarray(acts_ND), dtype=torch.float32)
    if x_ND.ndim != 2:
        raise ValueError(f"acts_ND must be 2-D (tokens, d_in), got shape {tuple(x_ND.shape)}")
    if x_ND.shape[0] < 2:
        raise ValueError(f"need at least 2 tokens to fit an SAE, got {x_ND.shape[0]}")
    if not torch.isfinite(x_ND).all():
        raise ValueError("acts_ND has non-finite values; cannot fit an SAE")
    return x_ND


def _configs(d_in: int, hook_name: str, model_name: str, p: dict):
    """sae-lens' JumpReLU training-SAE config and trainer config for the demo fit ``p`` (train_params)."""
    from sae_lens import JumpReLUTrainingSAEConfig, LoggingConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.sae import SAEMetadata

    steps, batch_size, lr = p["steps"], p["batch_size"], p["lr"]
    train_cfg = JumpReLUTrainingSAEConfig(
        d_in=d_in,
        d_sae=p["d_sae"],
        dtype="float32",
        device="cpu",
        apply_b_dec_to_input=False,
        normalize_activations="none",
        jumprelu_init_threshold=p["init_threshold"],
        jumprelu_bandwidth=p["bandwidth"],
        jumprelu_sparsity_loss_mode=p["sparsity_loss_mode"],
        jumprelu_ste_to_input=p["ste_to_input"],
        l0_coefficient=p["l0_coefficient"],
        l0_warm_up_steps=max(1, steps // 10),
        pre_act_loss_coefficient=p["pre_act_loss_coefficient"],
        metadata=SAEMetadata(model_name=model_name, hook_name=hook_name, neuronpedia_id=None),
    )
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * batch_size,
        train_batch_size_samples=batch_size,
        lr=lr,
        lr_end=lr / 10,  # required: SAETrainer asserts lr_end is not None
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
    return train_cfg, trainer_cfg


def _fit(
    x_scaled_ND: torch.Tensor, mean_scaled_D: torch.Tensor, scale: float, configs, p: dict
) -> JumpReLUSAE:
    """Train on the scaled activations (b_dec at their mean, b_enc centring the pre-activations), then fold
    ``scale`` into the weights and return the inference ``JumpReLUSAE`` (reads raw activations)."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, JumpReLUTrainingSAE, SAETrainer

    train_cfg, trainer_cfg = configs
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(p["seed"])
        train_sae = JumpReLUTrainingSAE(train_cfg)
        with torch.no_grad():
            train_sae.b_dec.copy_(mean_scaled_D)
            train_sae.b_enc.copy_(-(mean_scaled_D @ train_sae.W_enc))
        batches = _batches(x_scaled_ND, p["batch_size"], p["seed"])
        train_sae = SAETrainer(cfg=trainer_cfg, sae=train_sae, data_provider=batches).fit()
    with torch.no_grad():
        train_sae.threshold.data.clamp_(min=0.0)  # the trainer projects before each step, not after the last
        train_sae.fold_activation_norm_scaling_factor(scale)
    sae = JumpReLUSAE(JumpReLUSAEConfig.from_dict(train_sae.cfg.get_inference_sae_cfg_dict()))
    sae.load_state_dict({k: v.detach().float().clone() for k, v in train_sae.state_dict().items()})
    return sae.eval()
