"""The paper's convolutional GANs: MNIST CNN (1x28x28), CIFAR10 CNN (3x32x32) and its
64x64 extension for CelebA.

Generators map z (b, latent_dim) to (b, C, H, W) in [-1, 1]; the discriminator
(the paper's MNIST D, used for every shape) maps (b, C, H, W) to logits (b, outputs).
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import MinibatchDiscrimination


def _up(cin: int, cout: int, last: bool = False) -> list[nn.Module]:
    """5x5 transposed convolution doubling H and W; BN + ReLU, or tanh when last."""
    conv = nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)
    return [conv, nn.Tanh()] if last else [conv, nn.BatchNorm2d(cout), nn.ReLU()]


class CNNGenerator(nn.Module):
    """MNIST: FC latent_dim -> 6272 (128x7x7), tconv 5x5 -> 32x14x14, tconv 5x5 -> 1x28x28."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(latent_dim, 128 * 7 * 7), nn.BatchNorm1d(128 * 7 * 7),
                                nn.ReLU())
        self.deconv = nn.Sequential(*_up(128, 32), *_up(32, 1, last=True))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.fc(z).view(-1, 128, 7, 7))


class CifarGenerator(nn.Module):
    """CIFAR10 (the Keras ACGAN example the paper follows): FC latent_dim -> 6144
    (384x4x4), ReLU; tconv 5x5 -> 192x8x8, -> 96x16x16, -> 3x32x32 (tanh).
    ``size`` 64 adds one more doubling (-> 48x32x32) before the RGB layer."""

    def __init__(self, latent_dim: int, size: int = 32, channels: int = 3):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(latent_dim, 384 * 4 * 4), nn.ReLU())
        widths = [384, 192, 96] + ([48] if size == 64 else [])
        layers = [m for cin, cout in zip(widths, widths[1:]) for m in _up(cin, cout)]
        self.deconv = nn.Sequential(*layers, *_up(widths[-1], channels, last=True))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.fc(z).view(-1, 384, 4, 4))


class CNNDiscriminator(nn.Module):
    """Six 3x3 convs (16, 32, 64, 128, 256, 512; strides 2,1,2,1,2,1), LeakyReLU(0.2),
    global average pool, minibatch discrimination, FC -> outputs; any C x H x W."""

    def __init__(self, outputs: int, channels: int = 1):
        super().__init__()
        layers, cin = [], channels
        for cout, stride in zip((16, 32, 64, 128, 256, 512), (2, 1, 2, 1, 2, 1)):
            layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.2)]
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.mbd = MinibatchDiscrimination(512)
        self.fc = nn.Linear(512 + self.mbd.kernels, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.mbd(self.features(x)))
