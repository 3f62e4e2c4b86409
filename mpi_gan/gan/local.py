"""A full GAN trained locally: what every FL-GAN worker and the standalone GAN run.

Holds G, D and their Adam optimizers; ``step(t)`` is one ``gan_step`` on the
real batch and latent batch that are pure functions of (seed, owner, t), so a
resumed or replayed run draws the same data. Its settings are a ``LocalSettings``
(``config.local_settings`` reads them from a run's configuration).
"""
from __future__ import annotations

import torch

from ..io.state import (adam_state, average_state, load_adam_state, load_average_state,
                        load_module_state, module_state, under, with_prefix)
from ..models import make_discriminator, make_generator
from ..seeding import real_batch_indices
from .ema import make_average, update_average
from .losses import gan_step, latent_batch, make_adam
from .settings import LocalSettings


class LocalGAN:
    """G (b, latent) -> (b, C, H, W), D, Adam for each; ``owner`` names the data streams
    (the worker rank, 1 for the standalone GAN). Every LocalGAN of a run starts from the
    same seeded G and D."""

    def __init__(self, cfg: LocalSettings, shape: tuple[int, int, int], shard,
                 owner: int, device: torch.device = torch.device("cpu")):
        """``shape``: one sample's (C, H, W); ``shard``: the real samples (``images``
        (m, C, H, W) in [-1, 1], ``labels`` (m,)), None for models that only receive
        averages (FL-GAN's server)."""
        self.cfg, self.shard, self.owner, self.device = cfg, shard, owner, device
        self.classes = cfg.classes
        self.g = make_generator(cfg.model, cfg.latent_dim, cfg.seed, shape).to(device)
        self.d = make_discriminator(cfg.model, cfg.disc_outputs, cfg.seed, 0, shape).to(device)
        skip = cfg.skip_nonfinite
        self.opt_g = make_adam(self.g, cfg.lr_g, cfg.beta1, cfg.beta2, skip)
        self.opt_d = make_adam(self.d, cfg.lr_d, cfg.beta1, cfg.beta2, skip)
        # the moving average of G (--g-ema; the standalone GAN only: FL-GAN refuses it)
        self.average = make_average(self.g) if cfg.g_ema else None

    @property
    def scored(self) -> torch.nn.Module:
        """The generator that is scored, published and sampled: the average if any, else G."""
        return self.g if self.average is None else self.average

    def step(self, iteration: int) -> tuple[float, float]:
        """One local iteration; returns (mean D loss, G loss)."""
        cfg = self.cfg
        idx = real_batch_indices(cfg.seed, self.owner, len(self.shard), cfg.batch_size,
                                 iteration)
        x_r = self.shard.images[idx].to(self.device)
        y_r = self.shard.labels[idx].to(self.device) if self.classes else None
        z, y_fake = latent_batch(cfg.latent_dim, self.classes, cfg.batch_size, cfg.seed,
                                 "local", self.owner, iteration)
        losses = gan_step(self.g, self.d, self.opt_g, self.opt_d, x_r, y_r, z.to(self.device),
                          y_fake.to(self.device) if y_fake is not None else None,
                          cfg.disc_steps, cfg.saturating)
        if self.average is not None:
            update_average(self.average, self.g, cfg.g_ema)
        return losses

    def state(self) -> list[tuple[str, torch.Tensor]]:
        """``g/`` and ``d/`` entries: each model and its Adam state; ``g_ema/`` the average."""
        return (with_prefix(module_state(self.g) + adam_state(self.g, self.opt_g), "g/")
                + with_prefix(module_state(self.d) + adam_state(self.d, self.opt_d), "d/")
                + average_state(self.average))

    def load_state(self, values: dict[str, torch.Tensor]) -> None:
        for prefix, model, opt in (("g/", self.g, self.opt_g), ("d/", self.d, self.opt_d)):
            part = under(values, prefix)
            load_module_state(model, part)
            load_adam_state(model, opt, part)
        load_average_state(self.average, values)
