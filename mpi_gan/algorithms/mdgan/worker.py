"""MD-GAN worker (ranks 1..N): one discriminator, a private shard, error feedback.

Receives its transport, discriminator, optimizer, shard and config as arguments.
Sample tensors are (b, C, H, W) float32; labels (b,) int64.
"""
from __future__ import annotations

import torch
from torch import nn

from ... import compression
from ...comm.transport import Transport, wait_all
from ...config import Config
from ...data import Shard, real_batch_indices
from ...gan.adam import Adam
from ...gan.losses import discriminator_step, error_feedback
from ...io.state import Layout, adam_state, load_adam_state, load_module_state, module_state
from . import plan as alg


def feedback_channel(cfg: Config) -> compression.Channel | None:
    """The compressor (and residual memory) of a worker's feedback; None: raw float32."""
    if cfg.compress == "none":
        return None
    return compression.Channel(compression.parse_spec(cfg.compress),
                               compression.ResidualMemory() if cfg.residual else None)


def feedback_name(worker: int) -> str:
    """Name of worker ``worker``'s feedback tensor for its compressor."""
    return f"worker{worker}/feedback"


def channel_state(channel: compression.Channel | None, shape: tuple[int, ...], worker: int
                  ) -> list[tuple[str, torch.Tensor]]:
    """The feedback channel's state entries (``channel/...``) for checkpoints; ``shape``
    is the feedback's, (b, C, H, W)."""
    if channel is None:
        return []
    return channel.state(feedback_name(worker), shape, prefix="channel/")


class Worker:
    """Trains D_n on (X_r, X_d), returns F_n on X_g, swaps D_n with a peer."""

    def __init__(self, transport: Transport, discriminator: nn.Module,
                 optimizer: Adam, shard: Shard, cfg: Config,
                 device: torch.device, channel: compression.Channel | None = None,
                 swap_period: int = 0):
        self.t, self.d, self.opt, self.shard = transport, discriminator, optimizer, shard
        self.cfg, self.device, self.channel = cfg, device, channel
        self.swap_period = swap_period  # iterations between swaps (0: never)
        self.n = transport.rank
        self.feedback_bytes = 0  # bytes of every feedback message sent
        self.lose([])
        b = cfg.batch_size
        self.shape = (b, *shard.images.shape[1:])
        self.x_g = torch.empty(self.shape, device=device)
        self.x_d = torch.empty(self.shape, device=device)
        self.labels = torch.empty(2 * b, dtype=torch.int64, device=device)
        self.feedback_out = torch.empty(self.shape, device=device)
        self.losses_out = torch.empty(2)
        # the fixed-shape messages with the server, set up once (persistent requests)
        persistent = transport.persistent
        self.incoming = [persistent(self.x_g, 0, "batch_g", send=False),
                         persistent(self.x_d, 0, "batch_d", send=False)]
        if cfg.acgan:
            self.incoming.append(persistent(self.labels, 0, "labels", send=False))
        self.outgoing = [persistent(self.losses_out, 0, "losses", send=True)]
        if channel is None:
            self.outgoing.append(persistent(self.feedback_out, 0, "feedback", send=True))

    def lose(self, lost: list[int]) -> None:
        """Swap among the workers alive only (``lost``: world ranks that died)."""
        self.workers = [n for n in self.t.alive if n != 0 and n not in lost]

    def step(self, iteration: int) -> None:
        """Run iteration ``iteration`` (0-based) of Algorithm 1 on this worker, then swap D
        if a swap is due after it."""
        cfg = self.cfg
        incoming = [message.start() for message in self.incoming]
        idx = real_batch_indices(cfg.seed, self.n, len(self.shard), cfg.batch_size, iteration)
        x_r = self.shard.images[idx].to(self.device)
        y_r = self.shard.labels[idx].to(self.device) if cfg.acgan else None
        wait_all(incoming)
        y_g, y_d = (self.labels[:cfg.batch_size], self.labels[cfg.batch_size:]) if cfg.acgan \
            else (None, None)
        d_losses = [discriminator_step(self.d, self.opt, x_r, y_r, self.x_d, y_d)
                    for _ in range(cfg.disc_steps)]
        feedback, g_loss = error_feedback(self.d, self.x_g, y_g, cfg.g_loss == "saturating")
        self.losses_out.copy_(torch.tensor([sum(d_losses) / len(d_losses), g_loss]))
        if self.channel is None:
            message = self.feedback_out.copy_(feedback)
            requests = []
        else:
            payload = self.channel.encode(feedback, feedback_name(self.n))
            message = torch.from_numpy(payload.to_bytes())
            requests = [self.t.isend_tensor(message, 0, "feedback")]
        self.feedback_bytes += message.numel() * message.element_size()
        wait_all(requests + [m.start() for m in self.outgoing])
        swap = alg.swap_after(iteration, self.swap_period)
        if swap is not None:
            self.swap(swap)

    def _swap_entries(self) -> list[tuple[str, torch.Tensor]]:
        entries = module_state(self.d)
        if self.cfg.swap_adam == "travel":
            entries += adam_state(self.d, self.opt)
        return entries

    def swap(self, swap_index: int) -> None:
        """Exchange D with peers along the seed-derived derangement (Sendrecv: no deadlock)."""
        partners = alg.swap_partners(self.cfg.seed, swap_index, self.workers, self.n)
        if partners is None:
            return
        entries = self._swap_entries()
        layout = Layout(entries)
        received = self.t.sendrecv_into(layout.pack(entries), partners[0], layout.empty(),
                                        partners[1], "swap")
        values = layout.unpack(received)
        load_module_state(self.d, values)
        if self.cfg.swap_adam == "travel":
            load_adam_state(self.d, self.opt, values)
        else:
            self.opt.state.clear()  # the received D restarts Adam from scratch

    def state(self) -> list[tuple[str, torch.Tensor]]:
        """D's model and Adam entries and the feedback channel's state."""
        return module_state(self.d) + adam_state(self.d, self.opt) + \
            channel_state(self.channel, self.shape, self.n)

    def load_state(self, values: dict[str, torch.Tensor]) -> None:
        load_module_state(self.d, values)
        load_adam_state(self.d, self.opt, values)
        if self.channel is not None:
            self.channel.load_state(feedback_name(self.n), self.shape, values, prefix="channel/")
