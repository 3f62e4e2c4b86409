"""What a step costs one rank: compute seconds apart from network waits, and FLOPs.

``CostMeter.measure`` runs a role's step, timing it with ``time.perf_counter`` and
subtracting the seconds the transport spent blocked in MPI calls during it; the
first step a process runs is instead counted with torch's FLOP formulas
(``torch.utils.flop_counter.flop_registry``, what ``FlopCounterMode`` counts: matrix
products and convolutions, forward and backward, 2 FLOPs per multiply-add). The
counting mode is our own few lines because ``FlopCounterMode``'s module tracker
breaks ``torch.autograd.grad`` with respect to an input, which the MD-GAN
feedback needs. Rank 0 records every rank's
totals in ``/cost`` of checkpoints and the run file (docs/hdf5.md).
"""
from __future__ import annotations

import time

import h5py
import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ..comm.transport import blocked_seconds
from ..io import integrity

COST_FIELDS = ("compute_seconds", "steps", "flops_per_step")


class FlopCount(TorchDispatchMode):
    """Counts the FLOPs of every aten operation torch has a formula for (``flops``)."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch's hook (its docstring shows this override): nothing here is compiled, and
        # the default wraps __torch_dispatch__ in torch._dynamo.disable, whose import costs
        # about 2 s of CPU per process (gan/adam.py says why that matters)
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += int(formula(*args, **kwargs, out_val=out))
        return out


class CostMeter:
    """This process's totals since it started (a resumed run adds the checkpoint's).

    The first step of a process is counted in FLOPs and not timed (torch's dispatch
    machinery costs seconds on first use); every later step is timed: ``steps`` counts
    the timed steps, ``compute_seconds`` their seconds apart from network waits.
    """

    def __init__(self):
        self.compute_seconds, self.steps, self.flops_per_step = 0.0, 0, 0.0
        self.counted = False

    def measure(self, step, *args):
        """``step(*args)``'s result, counted in FLOPs (first call) or timed (later calls)."""
        if not self.counted:
            with FlopCount() as counter:
                out = step(*args)
            self.flops_per_step, self.counted = float(counter.flops), True
            return out
        tic, blocked = time.perf_counter(), blocked_seconds()
        out = step(*args)
        self.compute_seconds += (time.perf_counter() - tic) - (blocked_seconds() - blocked)
        self.steps += 1
        return out

    def entries(self) -> list[tuple[str, torch.Tensor]]:
        """The totals as named float64 tensors (1,), for a worker's checkpoint message."""
        return [(f"cost/{name}", torch.tensor([float(getattr(self, name))], dtype=torch.float64))
                for name in COST_FIELDS]

    def row(self) -> np.ndarray:
        """float64 (3,): compute_seconds, steps, flops_per_step."""
        return np.array([float(getattr(self, name)) for name in COST_FIELDS])


def split_cost(values: dict[str, torch.Tensor]) -> tuple[dict, np.ndarray]:
    """(the state entries without ``cost/``, the cost row float64 (3,))."""
    row = np.array([float(values[f"cost/{name}"]) for name in COST_FIELDS])
    return {k: v for k, v in values.items() if not k.startswith("cost/")}, row


def cost_datasets(rows: np.ndarray, wall_seconds: float) -> dict[str, np.ndarray]:
    """/cost datasets from rows float64 (world, 3): compute_seconds (world,), steps (timed
    steps) (world,) int64, flops_per_step (world,), and rank 0's training-loop wall_seconds ()."""
    return {"cost/compute_seconds": rows[:, 0].copy(), "cost/steps": rows[:, 1].astype(np.int64),
            "cost/flops_per_step": rows[:, 2].copy(),
            "cost/wall_seconds": np.float64(wall_seconds)}


def merge_cost(base: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Totals of a resumed run: seconds and steps add; FLOPs per step is the latest measure."""
    out = base + current
    out[:, 2] = np.where(current[:, 1] > 0, current[:, 2], base[:, 2])
    return out


def read_cost(path: str, world: int) -> tuple[np.ndarray, float]:
    """(rows float64 (world, 3), wall_seconds) stored in a checkpoint (zeros if absent). A
    checkpoint of another world size (an elastic resume): the ranks of both keep theirs,
    a departed rank's are dropped, a new rank's start at zero."""
    rows, wall = np.zeros((world, 3)), 0.0
    with h5py.File(path, "r") as f:
        if "cost" in f:
            for i, name in enumerate(COST_FIELDS):
                stored = integrity.read(f[f"cost/{name}"])
                both = min(world, len(stored))
                rows[:both, i] = stored[:both]
            wall = float(integrity.read(f["cost/wall_seconds"]))
    return rows, wall
