"""FL-GAN server (rank 0): receives every worker's G and D each round, averages them
weighted by shard size (FedAvg) and sends the averages back. Its G is the run's model."""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ...comm.transport import Transport, wait_all
from ...gan.fedavg import fedavg, flatten, load_flat
from ...io.state import module_state, under, with_prefix, load_module_state
from .protocol import round_after


class FlganServer:
    """Holds the averaged G and D; idle between rounds."""

    def __init__(self, transport: Transport, g: nn.Module, d: nn.Module,
                 shard_sizes: np.ndarray, period: int):
        self.t, self.g, self.d = transport, g, d
        self.weights = [float(s) for s in shard_sizes]
        self.period = period
        self.workers = list(range(1, transport.size))
        size = flatten([g, d]).numel()
        self.uploads = {n: torch.empty(size) for n in self.workers}
        self.losses = {n: torch.empty(2) for n in self.workers}
        self.last = None

    def step(self, iteration: int):
        """At the end of a round: FedAvg of every upload, sent back; one metrics row."""
        if not round_after(iteration, self.period):
            return None
        tic = time.perf_counter()
        requests = [self.t.irecv_into(self.uploads[n], n, "upload") for n in self.workers]
        requests += [self.t.irecv_into(self.losses[n], n, "losses") for n in self.workers]
        wait_all(requests)
        average = fedavg([self.uploads[n] for n in self.workers], self.weights)
        load_flat([self.g, self.d], average)
        wait_all([self.t.isend_tensor(average, n, "average") for n in self.workers])
        losses = np.stack([self.losses[n].numpy() for n in self.workers])
        self.last = dict(iteration=iteration + 1, seconds=time.perf_counter() - tic,
                         d_loss=losses[:, 0].copy(), g_loss=losses[:, 1].copy(),
                         server_bytes_in=self.t.received_total())
        return [("metrics", self.last)]

    def progress(self) -> str:
        if self.last is None:
            return "no round yet"
        return (f"last round after iteration {self.last['iteration']}: D loss "
                f"{self.last['d_loss'].mean():.4f}  G loss {self.last['g_loss'].mean():.4f}  "
                f"server received {self.t.received_total() / 1e6:.1f} MB")

    def state(self) -> list[tuple[str, torch.Tensor]]:
        return with_prefix(module_state(self.g), "g/") + with_prefix(module_state(self.d), "d/")

    def load_state(self, values: dict[str, torch.Tensor]) -> None:
        load_module_state(self.g, under(values, "g/"))
        load_module_state(self.d, under(values, "d/"))

    def published(self) -> list[tuple[str, torch.Tensor]]:
        return module_state(self.g)
