"""Model registries keyed by architecture and dataset shape (MD-GAN, Hardy et al. 2019, Sec. V).

``--model mlp|cnn`` picks the paper's model for the dataset's image shape:
  (1, 28, 28)  mlp: FC 512-512-784 G and D;  cnn: the paper's MNIST CNN
  (3, 32, 32)  mlp: the same MLP on 3072 values;  cnn: the paper's CIFAR10 CNN
  (3, 64, 64)  mlp: the MLP on 12288 values;  cnn: the CIFAR10 CNN with one more
               doubling (CelebA 64x64, our extension)
  (2,)         mlp: a small MLP for points (the toy mixtures ring and grid, 128 units
               per layer, linear output); no cnn
Generators map z (b, latent_dim) to images (b, C, H, W) in [-1, 1] (points: (b, 2));
discriminators map images to logits (b, outputs): column 0 real/fake, then one
per class with ACGAN. Parameter counts against the paper's: docs/models.md.
"""
from __future__ import annotations

import torch
from torch import nn

from ..seeding import derive_seed
from .classifier import AdaCompCNN, evaluate
from .cnn import CifarGenerator, CNNDiscriminator, CNNGenerator
from .layers import MinibatchDiscrimination
from .mlp import MLPDiscriminator, MLPGenerator, PointDiscriminator, PointGenerator

MODELS = ("mlp", "cnn")
MNIST_SHAPE = (1, 28, 28)
# the paper's counts (G, D) for latent 100 and ACGAN, keyed by (model, shape)
PAPER_PARAMS = {("mlp", MNIST_SHAPE): (716_560, 670_219), ("cnn", MNIST_SHAPE): (628_058, 286_048),
                ("cnn", (3, 32, 32)): (628_110, 100_203)}


def generator_for(model: str, latent_dim: int, shape: tuple[int, int, int]) -> nn.Module:
    """An unseeded G of architecture ``model`` for images of ``shape``."""
    shape = tuple(shape)
    if model == "mlp" and len(shape) == 1:
        return PointGenerator(latent_dim, shape[0])
    if model == "mlp":
        return MLPGenerator(latent_dim, shape)
    if model == "cnn" and shape == MNIST_SHAPE:
        return CNNGenerator(latent_dim)
    if model == "cnn" and shape[1:] in ((32, 32), (64, 64)):
        return CifarGenerator(latent_dim, shape[1], shape[0])
    raise ValueError(f"no {model} generator for images of shape {shape}")


def discriminator_for(model: str, outputs: int, shape: tuple[int, int, int]) -> nn.Module:
    """An unseeded D of architecture ``model`` for images of ``shape``."""
    if model == "mlp" and len(shape) == 1:
        return PointDiscriminator(outputs, shape[0])
    if model == "mlp":
        return MLPDiscriminator(outputs, tuple(shape))
    if model == "cnn" and len(shape) == 3:
        return CNNDiscriminator(outputs, shape[0])
    raise ValueError(f"no {model} discriminator")


def _seeded(factory, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def make_generator(model: str, latent_dim: int, seed: int,
                   shape: tuple[int, int, int] = MNIST_SHAPE) -> nn.Module:
    """G with its initial weights derived from the run seed."""
    return _seeded(lambda: generator_for(model, latent_dim, shape), derive_seed(seed, "G"))


def make_discriminator(model: str, outputs: int, seed: int, worker: int,
                       shape: tuple[int, int, int] = MNIST_SHAPE) -> nn.Module:
    """D_n of worker ``worker`` (1..N) with initial weights derived from the run seed."""
    return _seeded(lambda: discriminator_for(model, outputs, shape),
                   derive_seed(seed, "D", worker))


def count_params(module: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def make_classifier(seed: int, shape: tuple[int, int, int] = MNIST_SHAPE,
                    classes: int = 10) -> nn.Module:
    """The AdaComp CNN with initial weights derived from the run seed."""
    return _seeded(lambda: AdaCompCNN(shape, classes), derive_seed(seed, "classifier"))


__all__ = ["AdaCompCNN", "CNNDiscriminator", "CNNGenerator", "CifarGenerator", "MODELS",
           "MLPDiscriminator", "MLPGenerator", "MinibatchDiscrimination", "PointDiscriminator",
           "PointGenerator", "PAPER_PARAMS",
           "count_params", "discriminator_for", "evaluate", "generator_for", "make_classifier",
           "make_discriminator", "make_generator"]
