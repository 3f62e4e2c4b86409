"""The paper's MLP GAN (MNIST: FC 512-512-784), for images of any shape (C, H, W)."""
from __future__ import annotations

import math

import torch
from torch import nn


class MLPGenerator(nn.Module):
    """FC latent_dim -> 512 -> 512 -> C*H*W, LeakyReLU(0.2), tanh; output (b, C, H, W)."""

    def __init__(self, latent_dim: int, shape: tuple[int, int, int] = (1, 28, 28)):
        super().__init__()
        self.shape = tuple(shape)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 512), nn.LeakyReLU(0.2),
            nn.Linear(512, 512), nn.LeakyReLU(0.2),
            nn.Linear(512, math.prod(shape)), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.shape)


class MLPDiscriminator(nn.Module):
    """FC C*H*W -> 512 -> 512 -> outputs, LeakyReLU(0.2); input (b, C, H, W)."""

    def __init__(self, outputs: int, shape: tuple[int, int, int] = (1, 28, 28)):
        super().__init__()
        self.pixels = math.prod(shape)
        self.net = nn.Sequential(
            nn.Linear(self.pixels, 512), nn.LeakyReLU(0.2),
            nn.Linear(512, 512), nn.LeakyReLU(0.2),
            nn.Linear(512, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(len(x), self.pixels))


def point_mlp(inputs: int, outputs: int, hidden: int = 128) -> nn.Sequential:
    """FC inputs -> hidden -> hidden -> outputs, ReLU between, linear output."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, outputs))


class PointGenerator(nn.Module):
    """The MLP for points (the toy mixtures): FC latent_dim -> 128 -> 128 -> dims, ReLU,
    linear output (the points' own units, not [-1, 1]); output (b, dims)."""

    def __init__(self, latent_dim: int, dims: int = 2, hidden: int = 128):
        super().__init__()
        self.net = point_mlp(latent_dim, dims, hidden)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class PointDiscriminator(nn.Module):
    """The MLP D for points: FC dims -> 128 -> 128 -> outputs, ReLU; input (b, dims)."""

    def __init__(self, outputs: int, dims: int = 2, hidden: int = 128):
        super().__init__()
        self.net = point_mlp(dims, outputs, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
