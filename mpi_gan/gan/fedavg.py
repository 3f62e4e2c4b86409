"""FedAvg (McMahan et al. 2017) as pure functions, and the flat form models travel in.

A model travels as one float32 vector: its floating-point ``state_dict`` entries
(parameters and BatchNorm running statistics) in order; integer buffers (BatchNorm's
batch counters) stay local.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def fedavg(vectors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """sum_i w_i v_i / sum_i w_i, accumulated in float64 in list order; float32 result.

    vectors: N tensors of one shape; weights: N non-negative numbers (shard sizes)
    with a positive sum.
    """
    if len(vectors) != len(weights) or not vectors:
        raise ValueError(f"fedavg needs as many weights as vectors, got {len(vectors)} "
                         f"vectors and {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0 or min(weights) < 0:
        raise ValueError(f"fedavg weights must be >= 0 with a positive sum, got {list(weights)}")
    acc = torch.zeros_like(vectors[0], dtype=torch.float64)
    for v, w in zip(vectors, weights):
        acc.add_(v.to(torch.float64), alpha=float(w) / total)
    return acc.to(torch.float32)


def float_entries(modules: Sequence[nn.Module]) -> list[torch.Tensor]:
    """The floating-point state_dict tensors of ``modules``, in order (live references)."""
    return [v for m in modules for v in m.state_dict(keep_vars=True).values()
            if v.is_floating_point()]


def flatten(modules: Sequence[nn.Module]) -> torch.Tensor:
    """One float32 CPU vector of every floating state entry of ``modules``."""
    return torch.cat([v.detach().reshape(-1).to("cpu", torch.float32)
                      for v in float_entries(modules)])


def load_flat(modules: Sequence[nn.Module], vector: torch.Tensor) -> None:
    """Copy ``vector`` (as made by ``flatten``) back into ``modules``, in place."""
    offset = 0
    with torch.no_grad():
        for v in float_entries(modules):
            n = v.numel()
            v.copy_(vector[offset:offset + n].view_as(v))
            offset += n
    if offset != vector.numel():
        raise ValueError(f"flat model of {vector.numel()} values, modules hold {offset}")
