"""A seeded MNIST-shaped synthetic set: no files, for tests and dry runs.

Each class is a fixed random blob pattern derived from the seed; a sample is
its class pattern, shifted by up to 2 pixels, plus noise. uint8 (n, 1, 28, 28).
"""
from __future__ import annotations

import numpy as np

from ..seeding import generator
from .spec import DatasetKind, DatasetSpec, fixed_size, split_arrays


def synthetic_images(seed: int, count: int, stream: object) -> tuple[np.ndarray, np.ndarray]:
    """``count`` uint8 images (count, 1, 28, 28) with labels 0..9 (uint8) from a seeded stream."""
    import torch  # here: the registry is read (a command line checked) without torch
    proto_gen = generator(seed, "synthetic", "prototypes")
    coarse = torch.rand(10, 1, 7, 7, generator=proto_gen)
    prototypes = torch.nn.functional.interpolate(coarse, size=(28, 28), mode="bilinear",
                                                 align_corners=False)[:, 0]
    prototypes = (prototypes > 0.55).to(torch.float32)
    g = generator(seed, "synthetic", stream)
    labels = torch.randint(0, 10, (count,), generator=g)
    shifts = torch.randint(-2, 3, (count, 2), generator=g)
    noise = torch.rand(count, 28, 28, generator=g) * 0.3
    images = torch.empty(count, 28, 28)
    for i in range(count):
        images[i] = torch.roll(prototypes[labels[i]], shifts=tuple(shifts[i].tolist()), dims=(0, 1))
    images = (images * 0.7 + noise).clamp_(0, 1)
    return ((images * 255).round().to(torch.uint8).numpy()[:, None],
            labels.to(torch.uint8).numpy())


def spec(image_size: int, synthetic_size: int) -> DatasetSpec:
    """``synthetic_size`` training images (1, 28, 28) of 10 classes, 1,000 test images."""
    return fixed_size("synthetic", (1, 28, 28), 10, synthetic_size, 1000)(image_size,
                                                                          synthetic_size)


def generate(spec: DatasetSpec, seed: int, synthetic_size: int) -> tuple[dict, str]:
    return (split_arrays(synthetic_images(seed, synthetic_size, "train"),
                         synthetic_images(seed, spec.test_size, "test")),
            f"synthetic-{synthetic_size}-seed{seed}")


SYNTHETIC = DatasetKind("synthetic", spec, generate=generate)
