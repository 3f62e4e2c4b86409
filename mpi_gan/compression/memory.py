"""Residual memory (error feedback) usable with any compressor, kept apart from it.

compensate: add what was left unsent so far; update: keep what the payload did
not carry. Over any sequence, sum(sent) + residual == sum(gradients).
"""
from __future__ import annotations

import torch


class ResidualMemory:
    """Per-tensor residuals, keyed by name."""

    def __init__(self):
        self.residuals: dict[str, torch.Tensor] = {}

    def compensate(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        """tensor + residual (a new tensor; the input is not modified)."""
        residual = self.residuals.get(name)
        if residual is None:
            return tensor.clone()
        if residual.device != tensor.device:  # restored from a checkpoint onto the host
            residual = self.residuals[name] = residual.to(tensor.device)
        return tensor + residual

    def update(self, compensated: torch.Tensor, name: str, sent: torch.Tensor) -> None:
        """residual = compensated - sent (``sent``: the decompressed payload)."""
        self.residuals[name] = compensated - sent.to(compensated.dtype)

    def state(self, name: str, numel: int) -> dict[str, torch.Tensor]:
        """The residual of ``name``, flat (zeros before the first update)."""
        residual = self.residuals.get(name)
        return {"residual": torch.zeros(numel) if residual is None else residual.reshape(-1)}

    def load_state(self, name: str, values: dict[str, torch.Tensor], shape) -> None:
        self.residuals[name] = values["residual"].reshape(shape).clone()
