"""FL-GAN worker (ranks 1..N): a full local GAN on its shard; at the end of every round it
uploads G and D and continues from the server's averages (its Adam states stay local)."""
from __future__ import annotations

import torch

from ...comm.transport import Transport, wait_all
from ...gan.fedavg import flatten, load_flat
from ...gan.local import LocalGAN
from .protocol import round_after


class FlganWorker:
    """``local`` is this worker's LocalGAN; losses are summed over the round."""

    def __init__(self, transport: Transport, local: LocalGAN, period: int):
        self.t, self.local, self.period = transport, local, period
        self.round_losses = torch.zeros(3, dtype=torch.float64)  # D sum, G sum, iterations
        self.average = torch.empty(flatten([local.g, local.d]).numel())

    def step(self, iteration: int) -> None:
        d_loss, g_loss = self.local.step(iteration)
        self.round_losses += torch.tensor([d_loss, g_loss, 1.0], dtype=torch.float64)
        if round_after(iteration, self.period):
            self.exchange()

    def exchange(self) -> None:
        """Upload (G, D) and the round's mean losses; load the server's average."""
        upload = flatten([self.local.g, self.local.d])
        means = (self.round_losses[:2] / self.round_losses[2]).to(torch.float32)
        wait_all([self.t.isend_tensor(upload, 0, "upload"), self.t.isend_tensor(means, 0, "losses"),
                  self.t.irecv_into(self.average, 0, "average")])
        load_flat([self.local.g, self.local.d], self.average)
        self.round_losses.zero_()

    def state(self) -> list[tuple[str, torch.Tensor]]:
        return self.local.state() + [("round/losses", self.round_losses.clone())]

    def load_state(self, values: dict[str, torch.Tensor]) -> None:
        self.local.load_state(values)
        self.round_losses.copy_(values["round/losses"])
