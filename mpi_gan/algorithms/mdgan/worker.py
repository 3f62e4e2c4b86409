"""MD-GAN worker (ranks 1..N): one discriminator, a private shard, error feedback.

Receives its transport, discriminator, optimizer, shard and config as arguments.
Sample tensors are (b, 1, 28, 28) float32; labels (b,) int64.
"""
from __future__ import annotations

import torch
from torch import nn

from ... import compression

from . import plan as alg
from ...gan.losses import discriminator_step, error_feedback
from ...config import Config
from ...data import Shard, real_batch_indices
from ...io.state import (Layout, adam_state, load_adam_state, load_module_state, load_rng_state,
                    module_state, rng_state)
from ...comm.transport import Transport, wait_all


def feedback_channel(cfg: Config) -> compression.Channel | None:
    """The compressor (and residual memory) of a worker's feedback; None: raw float32."""
    if cfg.compress == "none":
        return None
    return compression.Channel(compression.parse_spec(cfg.compress),
                               compression.ResidualMemory() if cfg.residual else None)


def feedback_name(worker: int) -> str:
    """Name of worker ``worker``'s feedback tensor for its compressor."""
    return f"worker{worker}/feedback"


def feedback_shape(cfg: Config) -> tuple[int, ...]:
    return (cfg.batch_size, 1, 28, 28)


def channel_state(channel: compression.Channel | None, cfg: Config, worker: int
                  ) -> list[tuple[str, torch.Tensor]]:
    """The feedback channel's state entries (``channel/...``) for checkpoints."""
    if channel is None:
        return []
    return channel.state(feedback_name(worker), feedback_shape(cfg), prefix="channel/")


class Worker:
    """Trains D_n on (X_r, X_d), returns F_n on X_g, swaps D_n with a peer."""

    def __init__(self, transport: Transport, discriminator: nn.Module,
                 optimizer: torch.optim.Optimizer, shard: Shard, cfg: Config,
                 device: torch.device, channel: compression.Channel | None = None):
        self.t, self.d, self.opt, self.shard = transport, discriminator, optimizer, shard
        self.cfg, self.device, self.channel = cfg, device, channel
        self.n = transport.rank
        self.feedback_bytes = 0  # bytes of every feedback message sent
        self.workers = transport.size - 1
        b = cfg.batch_size
        self.x_g = torch.empty(b, 1, 28, 28, device=device)
        self.x_d = torch.empty(b, 1, 28, 28, device=device)
        self.labels = torch.empty(2 * b, dtype=torch.int64, device=device)

    def step(self, iteration: int) -> None:
        """Run iteration ``iteration`` (0-based) of Algorithm 1 on this worker."""
        cfg = self.cfg
        incoming = [self.t.irecv_into(self.x_g, 0, "batch_g"),
                    self.t.irecv_into(self.x_d, 0, "batch_d")]
        if cfg.acgan:
            incoming.append(self.t.irecv_into(self.labels, 0, "labels"))
        idx = real_batch_indices(cfg.seed, self.n, len(self.shard), cfg.batch_size, iteration)
        x_r = self.shard.images[idx].to(self.device)
        y_r = self.shard.labels[idx].to(self.device) if cfg.acgan else None
        wait_all(incoming)
        y_g, y_d = (self.labels[:cfg.batch_size], self.labels[cfg.batch_size:]) if cfg.acgan \
            else (None, None)
        d_losses = [discriminator_step(self.d, self.opt, x_r, y_r, self.x_d, y_d)
                    for _ in range(cfg.disc_steps)]
        feedback, g_loss = error_feedback(self.d, self.x_g, y_g, cfg.g_loss == "saturating")
        losses = torch.tensor([sum(d_losses) / len(d_losses), g_loss], dtype=torch.float32)
        if self.channel is None:
            message = feedback.contiguous()
        else:
            payload = self.channel.encode(feedback, feedback_name(self.n))
            message = torch.from_numpy(payload.to_bytes())
        self.feedback_bytes += message.numel() * message.element_size()
        wait_all([self.t.isend_tensor(message, 0, "feedback"),
                  self.t.isend_tensor(losses, 0, "losses")])

    def _swap_entries(self) -> list[tuple[str, torch.Tensor]]:
        entries = module_state(self.d)
        if self.cfg.swap_adam == "travel":
            entries += adam_state(self.d, self.opt)
        return entries

    def swap(self, swap_index: int) -> None:
        """Exchange D with peers along the seed-derived derangement (Sendrecv: no deadlock)."""
        dest = alg.derangement(self.cfg.seed, swap_index, self.workers)
        if dest is None:
            return
        entries = self._swap_entries()
        layout = Layout(entries)
        received = self.t.sendrecv_into(layout.pack(entries), dest[self.n - 1], layout.empty(),
                                   alg.swap_source(dest, self.n), "swap")
        values = layout.unpack(received)
        load_module_state(self.d, values)
        if self.cfg.swap_adam == "travel":
            load_adam_state(self.d, self.opt, values)
        else:
            self.opt.state.clear()  # the received D restarts Adam from scratch

    def state(self) -> list[tuple[str, torch.Tensor]]:
        """D's model, Adam, this rank's RNG and the feedback channel's entries."""
        return module_state(self.d) + adam_state(self.d, self.opt) + rng_state() + \
            channel_state(self.channel, self.cfg, self.n)

    def send_state(self, layout: Layout) -> None:
        self.t.send_tensor(layout.pack(self.state()), 0, "checkpoint")

    def receive_state(self, layout: Layout) -> None:
        values = layout.unpack(self.t.recv_into(layout.empty(), 0, "restore"))
        load_module_state(self.d, values)
        load_adam_state(self.d, self.opt, values)
        load_rng_state(values)
        if self.channel is not None:
            self.channel.load_state(feedback_name(self.n), feedback_shape(self.cfg), values,
                                    prefix="channel/")
