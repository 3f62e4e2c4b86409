"""MD-GAN server (rank 0): the single generator and the parameter-server loop.

Receives its transport, generator, optimizer and config as arguments; owns no
MPI beyond the transport. Sample tensors are (b, C, H, W) float32.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ... import compression
from ...comm.transport import ANY_SOURCE, Transport, TransportError, wait_all
from ...compression.payload import Payload
from .config import MdganConfig
from ...gan.adam import Adam
from ...gan.ema import update_average
from ...gan.losses import latent_batch
from ...io.state import (adam_state, average_state, load_adam_state, load_average_state,
                         load_module_state, module_state)
from . import plan as alg


class GeneratorState:
    """Rank 0's generator side, for a role with ``g``, ``opt`` and ``average`` (G's moving
    average, or None): what is scored and published, and what a checkpoint holds."""

    @property
    def scored(self) -> nn.Module:
        """The generator that is scored, published and sampled: the average if any, else G."""
        return self.g if self.average is None else self.average

    def state(self) -> list[tuple[str, torch.Tensor]]:
        """G's model and Adam entries (see io/state.py), and the average's (``g_ema/``)."""
        return module_state(self.g) + adam_state(self.g, self.opt) + average_state(self.average)

    def load_state(self, values: dict[str, torch.Tensor]) -> None:
        load_module_state(self.g, values)
        load_adam_state(self.g, self.opt, values)
        load_average_state(self.average, values)

    def published(self) -> list[tuple[str, torch.Tensor]]:
        """What the run file holds: the weights of the scored generator."""
        return module_state(self.scored)


class Server(GeneratorState):
    """One iteration: K generated batches out, N feedbacks in, one step of G."""

    def __init__(self, transport: Transport, generator: nn.Module,
                 optimizer: Adam, cfg: MdganConfig, device: torch.device,
                 sample_shape: tuple[int, ...], classes: int, average: nn.Module | None = None):
        self.t, self.g, self.opt, self.cfg, self.device = transport, generator, optimizer, cfg, device
        self.average = average  # the moving average of G's weights (--g-ema), or None
        self.classes = classes  # one-hot classes in the latent (0: no ACGAN)
        self.world_workers = transport.size - 1
        self.shape = (cfg.batch_size, *sample_shape)
        workers = [n for n in transport.alive if n != 0]
        self.feedback = {n: torch.empty(self.shape, device=device) for n in workers}
        self.losses = {n: torch.empty(2) for n in workers}
        # feedback arrives compressed (variable size) unless --compress none
        self.decoder = None if cfg.compress == "none" else compression.parse_spec(cfg.compress)
        self.messages: list = []  # persistent messages of the current plan
        self.lose([])
        self.last = None

    def lose(self, lost: list[int]) -> None:
        """Plan over the workers alive (``lost``: world ranks that died): K and the batch
        assignment (``plan.batch_plan``), the iteration's routes (``plan.exchange_links``)
        and the feedback's scale 1 / (N_alive b)."""
        self.workers = [n for n in self.t.alive if n != 0 and n not in lost]
        self.batches, self.assignment = alg.batch_plan(self.cfg.k, self.workers)
        batch_links, feedback_links = alg.exchange_links(self.cfg.exchange, self.batches,
                                                         self.assignment)
        self.batch_links = [link for link in batch_links if link.sender == 0]
        self.feedback_links = [link for link in feedback_links if link.receiver == 0]
        self.scale = 1.0 / (len(self.workers) * self.cfg.batch_size)
        self._plan_messages()

    def _plan_messages(self) -> None:
        """The iteration's fixed-shape messages as persistent ones (set up once per plan):
        each generated batch goes out of one buffer (on the host when MPI cannot read the
        device) along the server's batch links; feedback (uncompressed: one per feedback
        link) and losses come in to each sender's buffer."""
        for message in self.messages:
            message.release()
        on_host = self.device.type == "cuda" and not self.t.cuda_aware
        self.outgoing = [torch.empty(self.shape, device="cpu" if on_host else self.device,
                                     pin_memory=on_host) for _ in range(self.batches)]
        self.label_out = {n: torch.empty(2 * self.cfg.batch_size, dtype=torch.int64)
                          for n in self.workers}
        persistent = self.t.persistent
        self.messages = [persistent(self.outgoing[link.batch], link.receiver, link.kind,
                                    send=True) for link in self.batch_links]
        if self.classes:
            self.messages += [persistent(self.label_out[n], n, "labels", send=True)
                              for n in self.workers]
        if self.decoder is None:
            self.messages += [persistent(self.feedback[link.sender], link.sender, "feedback",
                                         send=False) for link in self.feedback_links]
        self.messages += [persistent(self.losses[n], n, "losses", send=False)
                          for n in self.workers]

    def step(self, iteration: int) -> list[tuple[str, dict]]:
        """Run iteration ``iteration`` (0-based); returns its metrics row."""
        cfg, tic = self.cfg, time.perf_counter()
        latents = [latent_batch(cfg.latent_dim, self.classes, cfg.batch_size, cfg.seed,
                                iteration, j) for j in range(self.batches)]
        self.g.train()
        generated = [self.g(z.to(self.device)) for z, _ in latents]
        for buffer, x in zip(self.outgoing, generated):  # one host copy per batch, on a GPU
            buffer.copy_(x.detach())
        if self.classes:
            for n in self.workers:
                g, d = self.assignment[n]
                torch.cat([latents[g][1], latents[d][1]], out=self.label_out[n])
        requests = [message.start() for message in self.messages]
        if self.decoder is not None:
            for _ in self.feedback_links:  # in arrival order; summed below in link order
                self._receive_compressed_feedback()
        wait_all(requests)
        grads = alg.feedback_gradients([self.feedback[link.sender] for link in self.feedback_links],
                                       [link.batch for link in self.feedback_links],
                                       self.batches, self.scale)
        alg.generator_step(self.opt, generated, grads)
        if self.average is not None:
            update_average(self.average, self.g, cfg.g_ema)
        losses = np.full((self.world_workers, 2), np.nan, dtype=np.float32)  # NaN: dead
        for n in self.workers:
            losses[n - 1] = self.losses[n].numpy()
        self.last = dict(iteration=iteration + 1, seconds=time.perf_counter() - tic,
                         d_loss=losses[:, 0].copy(), g_loss=losses[:, 1].copy(),
                         server_bytes_out=self.t.sent_total())
        return [("metrics", self.last)]

    def _receive_compressed_feedback(self) -> None:
        buf, n = self.t.recv_any_size(ANY_SOURCE, "feedback")
        payload, end = Payload.from_bytes(buf.numpy())
        shape = tuple(self.feedback[n].shape)
        if end != buf.numel() or payload.shape != shape or payload.dtype != torch.float32:
            raise TransportError(f"feedback from worker {n}: payload of shape {payload.shape} "
                                 f"{payload.dtype} ({buf.numel() - end} trailing bytes), "
                                 f"expected {shape} float32")
        self.feedback[n].copy_(self.decoder.decompress(payload))

    def progress(self) -> str:
        row = self.last
        d_loss, g_loss = np.nanmean(row["d_loss"]), np.nanmean(row["g_loss"])  # NaN: dead
        return (f"D loss {d_loss:.4f}  G loss {g_loss:.4f}  server "
                f"sent {self.t.sent_total() / 1e6:.1f} MB, received "
                f"{self.t.received_total() / 1e6:.1f} MB")

