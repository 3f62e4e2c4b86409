"""Two-dimensional mixtures of Gaussians: the mode-collapse benchmarks of the unrolled-GAN,
VEEGAN and PacGAN papers, generated from the seed (no files).

  ring  8 Gaussians, centres evenly spaced on a circle of radius 2 (the first at (2, 0)),
        standard deviation 0.02 on each axis
  grid  25 Gaussians at (i, j) for i, j in {-4, -2, 0, 2, 4}, standard deviation 0.05

A sample is a point (x, y) float32 in the plane's own units: the models read and write
these coordinates as they are (no scaling to [-1, 1]). Each sample's mode index is kept
as its label (the datasets are unlabelled for ACGAN: their spec has 0 classes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..seeding import generator
from .spec import DataError, DatasetKind, DatasetSpec, split_arrays


@dataclass(frozen=True)
class Mixture:
    """centres (K, 2) float64 and the per-axis standard deviation of every mode."""

    centres: np.ndarray
    std: float

    @property
    def modes(self) -> int:
        return len(self.centres)


def _ring() -> Mixture:
    angles = 2 * np.pi * np.arange(8) / 8
    return Mixture(2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1), 0.02)


def _grid() -> Mixture:
    axis = np.arange(-4.0, 5.0, 2.0)
    return Mixture(np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2),
                   0.05)


MIXTURES = {"ring": _ring(), "grid": _grid()}
TRAIN_SIZE, TEST_SIZE = 50_000, 10_000


def mixture(name: str) -> Mixture:
    """The mixture of toy dataset ``name`` (KeyError for any other name)."""
    return MIXTURES[name]


def toy_points(name: str, seed: int, count: int, stream: object
               ) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points float32 (count, 2) of mixture ``name`` with their mode index
    (count,) uint8, from the seeded stream ("toy", name, stream): modes uniform, then
    centre + std * standard normal noise."""
    import torch  # here: the registry is read (a command line checked) without torch
    mix = mixture(name)
    g = generator(seed, "toy", name, stream)
    modes = torch.randint(0, mix.modes, (count,), generator=g)
    noise = torch.randn(count, 2, generator=g, dtype=torch.float64)
    points = torch.from_numpy(mix.centres)[modes] + mix.std * noise
    return points.to(torch.float32).numpy(), modes.to(torch.uint8).numpy()


def toy_kind(name: str) -> DatasetKind:
    """The registry's entry of mixture ``name``: 2-D points, unlabelled, no image size."""
    def spec(image_size: int, synthetic_size: int) -> DatasetSpec:
        if image_size:
            raise DataError(f"--image-size {image_size}: {name} holds 2-D points, not images")
        return DatasetSpec(name, (2,), 0, TRAIN_SIZE, TEST_SIZE)

    def generate(spec: DatasetSpec, seed: int, synthetic_size: int) -> tuple[dict, str]:
        return (split_arrays(toy_points(name, seed, spec.train_size, "train"),
                             toy_points(name, seed, spec.test_size, "test")),
                f"{name}-seed{seed}")
    return DatasetKind(name, spec, generate=generate)


RING, GRID = toy_kind("ring"), toy_kind("grid")
