"""AdaComp's server-side update (Hardy et al. 2017) as pure functions on flat tensors.

For a push with flat indices i and values g, computed on the parameters of version
``t_pull``:
  tau_i = how many updates applied since t_pull touched i        (its staleness)
  theta_i -= lr * g_i / max(1, tau_i)                             (staleness-aware step)
  touches_i += 1
With ``staleness=False`` the step is plain asynchronous SGD: theta_i -= lr * g_i.

Two ways to get tau, equal by construction (tests/unit/test_algorithm.py): the difference
of per-parameter touch counts now and at the pull (``staleness``, the single-process
reference keeps a copy per pull), and ``TouchLog``, the server's: the index sets of the
updates applied since the oldest pull still out, so its memory is bounded by what is
in flight (about delay x values per push), not workers x parameters.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import numpy as np
import torch

def staleness(touches: torch.Tensor, at_pull: torch.Tensor, idx) -> torch.Tensor:
    """tau for the pushed indices ``idx`` (int64 tensor, or a slice for a dense range)."""
    return touches[idx] - at_pull[idx]


def apply_push(theta: torch.Tensor, touches: torch.Tensor, idx, values: torch.Tensor,
               lr: float, tau: torch.Tensor | None) -> None:
    """In place: one push's step on ``theta`` and its record in ``touches``.

    ``idx``: distinct indices (int64 tensor) or a slice; ``tau`` None means a plain step.
    """
    step = values.to(theta.dtype) * lr
    if tau is not None:
        step = step / tau.clamp(min=1).to(theta.dtype)
    theta[idx] -= step
    touches[idx] += 1


def apply_parts(theta: torch.Tensor, touches: torch.Tensor, tau_of: Callable, parts,
                lr: float, use_staleness: bool) -> tuple[int, int, int]:
    """Apply one push given as [(indices or slice, values)] per layer; ``tau_of(layer,
    where)`` gives the staleness of those indices (the layers of one push are disjoint,
    so applying one does not change another's).

    Returns (values applied, max tau, sum of tau) over the push, for the log.
    """
    sent = tau_max = tau_sum = 0
    for layer, (where, values) in enumerate(parts):
        tau = tau_of(layer, where)
        apply_push(theta, touches, where, values, lr, tau if use_staleness else None)
        sent += values.numel()
        if tau.numel():
            tau_max, tau_sum = max(tau_max, int(tau.max())), tau_sum + int(tau.sum())
    return sent, tau_max, tau_sum


def count_in(where, touched) -> torch.Tensor:
    """For each index of ``where`` (a slice or sorted int64 indices), 1 if ``touched`` (a
    slice or sorted distinct int64 indices) holds it, else 0; int64."""
    if isinstance(where, slice):
        out = torch.zeros(where.stop - where.start, dtype=torch.int64)
        if isinstance(touched, slice):
            lo, hi = max(where.start, touched.start), min(where.stop, touched.stop)
            if lo < hi:
                out[lo - where.start:hi - where.start] = 1
            return out
        inside = touched[(touched >= where.start) & (touched < where.stop)]
        out[inside - where.start] = 1
        return out
    if isinstance(touched, slice):
        return ((where >= touched.start) & (where < touched.stop)).to(torch.int64)
    q, t = where.numpy(), touched.numpy()
    pos = np.minimum(np.searchsorted(t, q), max(len(t) - 1, 0))
    return torch.from_numpy((t[pos] == q).astype(np.int64) if len(t) else np.zeros(len(q),
                                                                                    np.int64))


class TouchLog:
    """The index sets of the applied updates, by version, back to the oldest pull out.

    ``record(version, wheres)`` after applying update ``version`` (one slice or index
    tensor per layer); ``tau(layer, where, since)`` = how many recorded updates after
    version ``since`` touched each index of ``where`` (in that layer);
    ``forget_up_to(version)`` drops what no outstanding pull can ask about.
    """

    def __init__(self):
        self.entries: OrderedDict[int, list] = OrderedDict()

    def record(self, version: int, wheres: list) -> None:
        self.entries[version] = [w if isinstance(w, slice) else w.clone() for w in wheres]

    def tau(self, layer: int, where, since: int) -> torch.Tensor:
        n = (where.stop - where.start) if isinstance(where, slice) else len(where)
        total = torch.zeros(n, dtype=torch.int64)
        for version, wheres in reversed(self.entries.items()):
            if version <= since:
                break
            total += count_in(where, wheres[layer])
        return total

    def forget_up_to(self, version: int) -> None:
        while self.entries and next(iter(self.entries)) <= version:
            self.entries.popitem(last=False)

    @property
    def nbytes(self) -> int:
        """Bytes of index sets held (slices count as nothing)."""
        return sum(8 * len(w) for ws in self.entries.values() for w in ws
                   if not isinstance(w, slice))
