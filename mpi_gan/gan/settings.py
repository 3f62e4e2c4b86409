"""What a local GAN (``gan.local.LocalGAN``) is built and trained with, as plain data:
``config.local_settings`` reads it from a run's configuration without importing torch."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LocalSettings:
    """What a local GAN is built and trained with."""

    model: str            # "mlp" or "cnn"
    latent_dim: int       # G's input size, one-hot classes included
    classes: int          # one-hot classes in G's input (0: unconditional)
    disc_outputs: int     # D's logits: 1, plus one per class for ACGAN
    batch_size: int
    disc_steps: int       # D steps per iteration
    saturating: bool      # G's loss log(1 - D(G(z))) instead of -log D(G(z))
    lr_g: float
    lr_d: float
    beta1: float
    beta2: float
    skip_nonfinite: bool  # Adam skips a step whose gradients are not finite
    g_ema: float          # decay of G's moving average (0: none)
    seed: int
