"""Residual memory (error feedback) usable with any compressor, kept apart from it.

compensate: add what was left unsent so far; update: keep what the payload did
not carry. Over any sequence, sum(sent) + residual == sum(gradients). One buffer per
tensor, updated in place (a sparse payload touches only its sent entries).
"""
from __future__ import annotations

import torch

from .payload import Payload, sent_entries


class ResidualMemory:
    """Per-tensor residuals, keyed by name."""

    def __init__(self):
        self.residuals: dict[str, torch.Tensor] = {}

    def compensate(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        """tensor + residual, computed in place into the residual buffer and returned (the
        input is not modified); valid until ``update``."""
        residual = self.residuals.get(name)
        if residual is None or residual.shape != tensor.shape or residual.dtype != tensor.dtype:
            compensated = tensor.detach().clone() if residual is None else tensor + residual
            self.residuals[name] = compensated
            return compensated
        if residual.device != tensor.device:  # restored from a checkpoint onto the host
            residual = self.residuals[name] = residual.to(tensor.device)
        return residual.add_(tensor)

    def update(self, compensated: torch.Tensor, name: str, payload: Payload) -> None:
        """residual = compensated - what ``payload`` carries (its decoded values, so that
        rounding of the values stays in the residual too); in place where it is sparse."""
        where, values = sent_entries(payload)
        values = values.to(compensated.device, compensated.dtype)
        if isinstance(where, slice):  # every entry: a new buffer (the payload may hold the
            self.residuals[name] = compensated - values.reshape(compensated.shape)  # old one)
            return
        flat = compensated.view(-1)
        flat[where.to(flat.device)] -= values
        self.residuals[name] = compensated

    def buffer(self, name: str, like: torch.Tensor) -> torch.Tensor | None:
        """The residual of ``name`` on ``like``'s device (None before the first ``keep``), for
        a compressor whose compiled pass accumulates into it in place (``AdaCompBins``)."""
        residual = self.residuals.get(name)
        if residual is not None and residual.device != like.device:  # restored onto the host
            residual = self.residuals[name] = residual.to(like.device)
        return residual

    def keep(self, name: str, residual: torch.Tensor) -> None:
        """Make ``residual`` the residual of ``name`` (what ``buffer`` returns next)."""
        self.residuals[name] = residual

    def state(self, name: str, numel: int) -> dict[str, torch.Tensor]:
        """The residual of ``name``, flat (zeros before the first update)."""
        residual = self.residuals.get(name)
        return {"residual": torch.zeros(numel) if residual is None else residual.reshape(-1)}

    def load_state(self, name: str, values: dict[str, torch.Tensor], shape) -> None:
        self.residuals[name] = values["residual"].reshape(shape).clone()
