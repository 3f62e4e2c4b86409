"""ASGD worker (ranks 1..N): pulls theta, computes a gradient on its next batch,
compresses it and pushes, until the server says stop.

Receives its transport, model, shard and compression channel as arguments.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ... import compression
from ...comm.transport import Transport
from ...data import Shard, real_batch_indices
from .protocol import HEADER, STATE, STOP, worker_state


@torch.no_grad()
def load_vector(vector: torch.Tensor, parameters) -> None:
    """Copy the flat float32 ``vector`` into ``parameters`` in order, on their devices
    (``torch.nn.utils.vector_to_parameters`` would make them views of ``vector``)."""
    offset = 0
    for p in parameters:
        p.copy_(vector[offset:offset + p.numel()].view_as(p))
        offset += p.numel()


class AsgdWorker:
    """One worker of the parameter-server SGD."""

    def __init__(self, transport: Transport | None, model: nn.Module, shard: Shard,
                 channel: compression.Channel, batch_size: int, seed: int, rank: int):
        self.t, self.model, self.shard, self.channel = transport, model, shard, channel
        self.batch_size, self.seed, self.rank = batch_size, seed, rank
        self.names = [name for name, _ in model.named_parameters()]
        self.shapes = [tuple(p.shape) for p in model.parameters()]
        self.pushed_bytes = 0
        self.compute_seconds = 0.0

    def state(self) -> list[tuple[str, torch.Tensor]]:
        """The compressor's and residual's state for every parameter tensor."""
        return worker_state(self.channel, self.names, self.shapes)

    def load_state(self, values: dict[str, torch.Tensor]) -> None:
        for name, shape in zip(self.names, self.shapes):
            self.channel.load_state(name, shape, values, prefix=f"channel/{name}/")

    def gradient(self, step: int) -> list[torch.Tensor]:
        idx = real_batch_indices(self.seed, self.rank, len(self.shard), self.batch_size, step)
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        device = next(self.model.parameters()).device
        loss = F.cross_entropy(self.model(self.shard.images[idx].to(device)),
                               self.shard.labels[idx].to(device))
        loss.backward()
        return [p.grad for p in self.model.parameters()]

    def push_message(self, version: int, grads: list[torch.Tensor]) -> torch.Tensor:
        payloads = [self.channel.encode(g, name) for g, name in zip(grads, self.names)]
        head = np.array([version], dtype=np.int64).view(np.uint8)
        return torch.from_numpy(np.concatenate([head, compression.pack(payloads)]))

    def serve(self, send_state, measure=None) -> None:
        """Answer pulls until the server says stop; ``send_state(iteration)`` answers a state
        request (the iteration of the checkpoint travels in the request's step field).
        ``measure``: unused (ASGD's cost is not measured)."""
        while True:
            buf, _ = self.t.recv_any_size(0, "pull")
            version, step = buf[:HEADER].view(torch.int64).tolist()
            if version == STOP:
                return
            if version == STATE:
                send_state(step)
                continue
            tic = time.perf_counter()
            load_vector(buf[HEADER:].view(torch.float32), self.model.parameters())
            message = self.push_message(version, self.gradient(step))
            self.compute_seconds += time.perf_counter() - tic
            self.pushed_bytes += message.numel()
            self.t.send_tensor(message, 0, "push")
