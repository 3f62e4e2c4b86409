"""The paper's MNIST generators and discriminators (MD-GAN, Hardy et al. 2019, Sec. V).

All generators map a latent batch z of shape (b, latent_dim) to images of shape
(b, 1, 28, 28) in [-1, 1]. All discriminators map images (b, 1, 28, 28) to
logits (b, outputs): column 0 is the real/fake logit, columns 1..10 the class
logits of the ACGAN variant (outputs = 11) used in the paper's experiments.

Parameter counts (latent_dim 100, ACGAN) against the paper's:
MLP G 716,560 (paper 716,560), MLP D 670,219 (paper 670,219); the CNN counts
differ from the paper's, whose layer list cannot produce its own numbers
(docs/models.md gives both).
"""
from __future__ import annotations

import torch
from torch import nn

from ..seeding import derive_seed

IMAGE_PIXELS = 28 * 28


class MLPGenerator(nn.Module):
    """FC latent_dim -> 512 -> 512 -> 784, LeakyReLU(0.2), tanh output."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 512), nn.LeakyReLU(0.2),
            nn.Linear(512, 512), nn.LeakyReLU(0.2),
            nn.Linear(512, IMAGE_PIXELS), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, 28, 28)


class MLPDiscriminator(nn.Module):
    """FC 784 -> 512 -> 512 -> outputs, LeakyReLU(0.2)."""

    def __init__(self, outputs: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(IMAGE_PIXELS, 512), nn.LeakyReLU(0.2),
            nn.Linear(512, 512), nn.LeakyReLU(0.2),
            nn.Linear(512, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(len(x), IMAGE_PIXELS))


class CNNGenerator(nn.Module):
    """FC latent_dim -> 6272 (128x7x7), tconv 5x5 -> 32x14x14, tconv 5x5 -> 1x28x28, tanh."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(latent_dim, 128 * 7 * 7), nn.BatchNorm1d(128 * 7 * 7),
                                nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(128, 32, 5, stride=2, padding=2, output_padding=1),
            nn.BatchNorm2d(32), nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 5, stride=2, padding=2, output_padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.fc(z).view(-1, 128, 7, 7))


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


class CNNDiscriminator(nn.Module):
    """Six 3x3 convs (16, 32, 64, 128, 256, 512; strides 2,1,2,1,2,1), LeakyReLU(0.2),
    global average pool, minibatch discrimination, FC -> outputs."""

    def __init__(self, outputs: int):
        super().__init__()
        layers, cin = [], 1
        for cout, stride in zip((16, 32, 64, 128, 256, 512), (2, 1, 2, 1, 2, 1)):
            layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.2)]
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.mbd = MinibatchDiscrimination(512)
        self.fc = nn.Linear(512 + self.mbd.kernels, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.mbd(self.features(x)))


GENERATORS = {"mlp": MLPGenerator, "cnn": CNNGenerator}
DISCRIMINATORS = {"mlp": MLPDiscriminator, "cnn": CNNDiscriminator}
PAPER_PARAMS = {"mlp": (716_560, 670_219), "cnn": (628_058, 286_048)}


def _seeded(factory, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def make_generator(model: str, latent_dim: int, seed: int) -> nn.Module:
    """G with its initial weights derived from the run seed."""
    return _seeded(lambda: GENERATORS[model](latent_dim), derive_seed(seed, "G"))


def make_discriminator(model: str, outputs: int, seed: int, worker: int) -> nn.Module:
    """D_n of worker ``worker`` (1..N) with initial weights derived from the run seed."""
    return _seeded(lambda: DISCRIMINATORS[model](outputs), derive_seed(seed, "D", worker))


def count_params(module: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class AdaCompCNN(nn.Module):
    """The AdaComp paper's MNIST classifier: (b, 1, 28, 28) -> logits (b, 10).

    conv 3x3x32 -> maxpool 2 -> conv 3x3x64 -> maxpool 2 -> FC 3136 -> 128 -> FC 10,
    ReLU activations, 'same' padding: 421,642 parameters.
    """

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def make_classifier(seed: int) -> nn.Module:
    """The AdaComp CNN with initial weights derived from the run seed."""
    return _seeded(AdaCompCNN, derive_seed(seed, "classifier"))
