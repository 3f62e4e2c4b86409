"""Layers shared by the discriminators."""
from __future__ import annotations

import torch
from torch import nn


class MinibatchDiscrimination(nn.Module):
    """Salimans et al. 2016: (b, in_features) -> (b, in_features + kernels).

    M = x T reshaped (b, kernels, kernel_dim);
    o_i,k = mean_{j != i} exp(-|M_i,k - M_j,k|_1)  (the paper's sum divided by b - 1,
    so the features stay in [0, 1] whatever the batch size).
    """

    def __init__(self, in_features: int, kernels: int = 50, kernel_dim: int = 5):
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        self.T = nn.Parameter(torch.randn(in_features, kernels * kernel_dim) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x @ self.T).view(-1, self.kernels, self.kernel_dim)
        l1 = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(dim=3)  # (b, b, kernels)
        others = max(len(x) - 1, 1)
        o = (torch.exp(-l1).sum(dim=1) - 1.0) / others  # drop the self term exp(0)
        return torch.cat([x, o], dim=1)
