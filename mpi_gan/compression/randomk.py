"""Random-k sparsification: k uniformly chosen entries per tensor (unscaled).

The choice is drawn from a stream seeded by (seed, tensor name, call number),
so a run is reproducible; the receiver needs no seed (indices travel).
"""
import torch

from ..streams import derive_seed

from .sparsify import random_indices, selection_count
from .topk import TopK


class RandomK(TopK):
    name = "randomk"
    PARAMS = {**TopK.PARAMS, "seed": (0, lambda x: isinstance(x, int) and x >= 0,
                                      "seed of the random choice, >= 0")}

    def __init__(self, **params):
        super().__init__(**params)
        self._calls: dict[str, int] = {}

    def state(self, name, numel):
        return {"calls": torch.tensor([self._calls.get(name, 0)], dtype=torch.int64)}

    def load_state(self, name, values):
        self._calls[name] = int(values["calls"][0])

    def select(self, flat, name):
        call = self._calls.get(name, 0)
        self._calls[name] = call + 1
        # drawn on the CPU: the same indices whatever the tensor's device
        seed = derive_seed(self.params["seed"], "randomk", name, call)
        k = selection_count(flat.numel(), self.params["ratio"], self.params["count"])
        return random_indices(flat.numel(), k, seed).to(flat.device), None
