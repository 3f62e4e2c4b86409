"""Residual memory (error feedback) usable with any compressor, kept apart from it.

compensate: add what was left unsent so far; update: keep what the payload did
not carry. Over any sequence, sum(sent) + residual == sum(gradients). One buffer per
tensor, updated in place (a sparse payload touches only its sent entries).
"""
from __future__ import annotations

import torch

from . import indexcodec
from .payload import Payload, decode_payload, decode_sparse


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
        if payload.index_code == indexcodec.DENSE:
            sent = decode_payload(payload).to(compensated.device, compensated.dtype)
            self.residuals[name] = compensated - sent
            return
        idx, values = decode_sparse(payload)
        flat = compensated.view(-1)
        where = torch.from_numpy(idx).to(flat.device)
        flat[where] -= values.to(flat.device, flat.dtype)
        self.residuals[name] = compensated

    def state(self, name: str, numel: int) -> dict[str, torch.Tensor]:
        """The residual of ``name``, flat (zeros before the first update)."""
        residual = self.residuals.get(name)
        return {"residual": torch.zeros(numel) if residual is None else residual.reshape(-1)}

    def load_state(self, name: str, values: dict[str, torch.Tensor], shape) -> None:
        self.residuals[name] = values["residual"].reshape(shape).clone()
