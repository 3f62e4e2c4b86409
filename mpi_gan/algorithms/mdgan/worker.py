"""MD-GAN worker (ranks 1..N): one discriminator, a private shard, error feedback.

Receives its transport, discriminator, optimizer, shard and config as arguments.
Sample tensors are (b, C, H, W) float32; labels (b,) int64.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from ... import compression
from ...comm.transport import Transport, wait_all
from .config import MdganConfig
from ...data import Shard, real_batch_indices
from ...gan.adam import Adam
from ...gan.losses import discriminator_step, error_feedback
from ...io.state import Layout, adam_state, load_adam_state, load_module_state, module_state
from ...train.straggler import Straggler
from . import plan as alg


def feedback_channel(cfg: MdganConfig) -> compression.Channel | None:
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


def real_batch(shard: Shard, cfg: MdganConfig, worker: int, step: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(X_r, its labels with --acgan, else None) of worker ``worker``'s ``step``-th step
    (0-based): ``real_batch_indices`` of its shard, on ``device``."""
    idx = real_batch_indices(cfg.seed, worker, len(shard), cfg.batch_size, step)
    return shard.images[idx].to(device), shard.labels[idx].to(device) if cfg.acgan else None


def local_step(d: nn.Module, opt: Adam, cfg: MdganConfig, x_r: torch.Tensor,
               y_r: torch.Tensor | None, x_g: torch.Tensor, x_d: torch.Tensor,
               labels: torch.Tensor | None, straggler: Straggler | None = None
               ) -> tuple[torch.Tensor, float, float]:
    """A worker's computation in one step of Algorithm 1: ``cfg.disc_steps`` D steps on
    (X_r, X_d), then the feedback F_n on X_g; ``labels`` (2b,) are the ACGAN labels of
    X_g then X_d, or None. Returns (F_n (b, C, H, W), mean D loss, G loss). A
    ``straggler`` (``--slow``) sleeps after computing, before the feedback goes out."""
    y_g, y_d = (labels[:cfg.batch_size], labels[cfg.batch_size:]) if labels is not None \
        else (None, None)
    tic = time.perf_counter()
    d_losses = [discriminator_step(d, opt, x_r, y_r, x_d, y_d) for _ in range(cfg.disc_steps)]
    feedback, g_loss = error_feedback(d, x_g, y_g, cfg.g_loss == "saturating")
    if straggler is not None:
        straggler.pad(time.perf_counter() - tic)
    return feedback, sum(d_losses) / len(d_losses), g_loss


def swap_discriminator(transport: Transport, d: nn.Module, opt: Adam, cfg: MdganConfig,
                       workers: list[int], worker: int, swap_index: int) -> None:
    """Worker ``worker``'s part of swap ``swap_index`` among ``workers``: its D (and, with
    --swap-adam travel, its Adam state) goes to its partner along the seed-derived
    derangement while the D of another arrives (one Sendrecv: no deadlock); with reset,
    the received D restarts Adam from scratch."""
    partners = alg.swap_partners(cfg.seed, swap_index, workers, worker)
    if partners is None:
        return
    entries = module_state(d)
    if cfg.swap_adam == "travel":
        entries += adam_state(d, opt)
    layout = Layout(entries)
    received = transport.sendrecv_into(layout.pack(entries), partners[0], layout.empty(),
                                       partners[1], "swap")
    values = layout.unpack(received)
    load_module_state(d, values)
    if cfg.swap_adam == "travel":
        load_adam_state(d, opt, values)
    else:
        opt.state.clear()


class DiscriminatorState:
    """A worker's checkpointed state, for a role with ``d``, ``opt``, ``channel``,
    ``shape`` (the feedback's) and ``n`` (its rank): D's model and Adam entries and the
    feedback channel's state."""

    def state(self) -> list[tuple[str, torch.Tensor]]:
        return module_state(self.d) + adam_state(self.d, self.opt) + \
            channel_state(self.channel, self.shape, self.n)

    def load_state(self, values: dict[str, torch.Tensor]) -> None:
        load_module_state(self.d, values)
        load_adam_state(self.d, self.opt, values)
        if self.channel is not None:
            self.channel.load_state(feedback_name(self.n), self.shape, values, prefix="channel/")


class Worker(DiscriminatorState):
    """Trains D_n on (X_r, X_d), returns F_n on X_g, swaps D_n with a peer."""

    def __init__(self, transport: Transport, discriminator: nn.Module,
                 optimizer: Adam, shard: Shard, cfg: MdganConfig,
                 device: torch.device, channel: compression.Channel | None = None,
                 swap_period: int = 0, straggler: Straggler | None = None):
        self.t, self.d, self.opt, self.shard = transport, discriminator, optimizer, shard
        self.cfg, self.device, self.channel = cfg, device, channel
        self.straggler = straggler  # --slow: sleeps to look FACTOR times slower
        self.swap_period = swap_period  # iterations between swaps (0: never)
        self.n = transport.rank
        self.feedback_bytes = 0  # bytes of every feedback message sent
        b = cfg.batch_size
        self.shape = (b, *shard.images.shape[1:])
        self.x_g = torch.empty(self.shape, device=device)
        self.x_d = torch.empty(self.shape, device=device)
        self.labels = torch.empty(2 * b, dtype=torch.int64, device=device)
        self.feedback_out = torch.empty(self.shape, device=device)
        self.losses_out = torch.empty(2)
        self.messages: list = []  # persistent messages of the current plan
        self.lose([])

    def lose(self, lost: list[int]) -> None:
        """Plan over the workers alive (``lost``: world ranks that died): swaps among them
        only, and this worker's routes of the iteration (``plan.exchange_links``)."""
        self.workers = [n for n in self.t.alive if n != 0 and n not in lost]
        batches, assignment = alg.batch_plan(self.cfg.k, self.workers)
        batch_links, feedback_links = alg.exchange_links(self.cfg.exchange, batches,
                                                         assignment)
        self._plan_messages(assignment[self.n][0], batch_links, feedback_links)

    def _plan_messages(self, g: int, batch_links: list[alg.Link],
                       feedback_links: list[alg.Link]) -> None:
        """The iteration's fixed-shape messages as persistent ones (set up once per plan):
        X_g and X_d in, each followed by the sends that relay it on (tree); the labels in
        (ACGAN); the children's feedback sums in (tree), in the order they are added;
        feedback (uncompressed) and losses out."""
        for message in self.messages:
            message.release()
        persistent = self.t.persistent
        self.relays = []  # (receive of X_g or X_d, the sends that forward it), X_g first
        for link in sorted((k for k in batch_links if k.receiver == self.n),
                           key=lambda k: k.kind != "batch_g"):
            buffer = self.x_g if link.kind == "batch_g" else self.x_d
            forwards = [persistent(buffer, out.receiver, out.kind, send=True)
                        for out in batch_links
                        if out.sender == self.n and (out.batch == g) == (buffer is self.x_g)]
            self.relays.append((persistent(buffer, link.sender, link.kind, send=False),
                                forwards))
        self.incoming = [persistent(self.labels, 0, "labels", send=False)] \
            if self.cfg.acgan else []
        self.sums_in = [persistent(torch.empty_like(self.feedback_out), link.sender,
                                   "feedback", send=False)
                        for link in feedback_links if link.receiver == self.n]
        self.outgoing = [persistent(self.losses_out, 0, "losses", send=True)]
        if self.channel is None:
            parent = next(link.receiver for link in feedback_links if link.sender == self.n)
            self.outgoing.append(persistent(self.feedback_out, parent, "feedback", send=True))
        self.messages = [m for receive, forwards in self.relays for m in (receive, *forwards)]
        self.messages += self.incoming + self.sums_in + self.outgoing

    def step(self, iteration: int) -> None:
        """Run iteration ``iteration`` (0-based) of Algorithm 1 on this worker, then swap D
        if a swap is due after it. With ``--exchange tree`` it also relays X_g and X_d as
        they arrive and adds its children's feedback sums to its own."""
        cfg = self.cfg
        for message in [receive for receive, _ in self.relays] + self.incoming + self.sums_in:
            message.start()
        x_r, y_r = real_batch(self.shard, cfg, self.n, iteration, self.device)
        requests = []
        for receive, forwards in self.relays:
            receive.wait()
            requests += [message.start() for message in forwards]
        wait_all(self.incoming)
        feedback, d_loss, g_loss = local_step(self.d, self.opt, cfg, x_r, y_r, self.x_g,
                                              self.x_d, self.labels if cfg.acgan else None,
                                              self.straggler)
        self.losses_out.copy_(torch.tensor([d_loss, g_loss]))
        if self.channel is None:
            message = self.feedback_out.copy_(feedback)
            for child in self.sums_in:  # in the order plan.tree_sum adds them
                child.wait()
                message.add_(child.tensor)
        else:
            payload = self.channel.encode(feedback, feedback_name(self.n))
            message = torch.from_numpy(payload.to_bytes())
            requests.append(self.t.isend_tensor(message, 0, "feedback"))
        self.feedback_bytes += message.numel() * message.element_size()
        wait_all(requests + [m.start() for m in self.outgoing])
        swap = alg.swap_after(iteration, self.swap_period)
        if swap is not None:
            self.swap(swap)

    def swap(self, swap_index: int) -> None:
        """Exchange D with peers along the seed-derived derangement (Sendrecv: no deadlock)."""
        swap_discriminator(self.t, self.d, self.opt, self.cfg, self.workers, self.n,
                           swap_index)
