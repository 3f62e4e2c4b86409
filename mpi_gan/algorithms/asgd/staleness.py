"""AdaComp's server-side update (Hardy et al. 2017) as pure functions on flat tensors.

The server keeps ``touches`` (int64, one count per parameter: how many applied
updates have touched it) and, per worker, a copy taken when that worker pulled.
For a push with flat indices i and values g:
  tau_i = touches_i(now) - touches_i(at the worker's pull)   (updates to i since the pull)
  theta_i -= lr * g_i / max(1, tau_i)                         (staleness-aware step)
  touches_i += 1
With ``staleness=False`` the step is plain asynchronous SGD: theta_i -= lr * g_i.
"""
from __future__ import annotations

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


def apply_parts(theta: torch.Tensor, touches: torch.Tensor, at_pull: torch.Tensor, parts,
                lr: float, use_staleness: bool) -> tuple[int, int, int]:
    """Apply one push given as [(indices or slice, values)] per layer.

    Returns (values applied, max tau, sum of tau) over the push, for the log.
    """
    sent = tau_max = tau_sum = 0
    for where, values in parts:
        tau = staleness(touches, at_pull, where)
        apply_push(theta, touches, where, values, lr, tau if use_staleness else None)
        sent += values.numel()
        if tau.numel():
            tau_max, tau_sum = max(tau_max, int(tau.max())), tau_sum + int(tau.sum())
    return sent, tau_max, tau_sum
