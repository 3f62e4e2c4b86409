"""Every dataset described once: image shape, classes, nominal sizes.

A ``DatasetSpec`` is the single place a shape (C, H, W), a class count or a
nominal train/test size comes from; models, the transport's buffers, the
traffic models and the configuration checks all read it. The sizes actually
used at run time are those of the loaded files (a test's small IDX file holds
30 images, not 60,000).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .toy import TEST_SIZE as TOY_TEST_SIZE, TOY_DATASETS, TRAIN_SIZE as TOY_TRAIN_SIZE


class DataError(RuntimeError):
    """Training data is missing, unreadable or malformed."""


@dataclass(frozen=True)
class DatasetSpec:
    """name; shape of one sample, (C, H, W) for images, (2,) for the toy points; classes
    (0: unlabelled); nominal sizes."""

    name: str
    shape: tuple[int, ...]
    classes: int
    train_size: int
    test_size: int

    @property
    def sample_size(self) -> int:
        """Values per sample, C * H * W for images."""
        return math.prod(self.shape)

    @property
    def is_image(self) -> bool:
        """Images (C, H, W), stored as uint8 and seen by the models in [-1, 1]; otherwise
        points in their own units (the toy mixtures)."""
        return len(self.shape) == 3

    def to_data(self, samples) -> np.ndarray:
        """Samples as the models see them (n, *shape) -> float32 in the dataset's own value
        range: images from [-1, 1] to pixel values [0, 255] (clipped), points unchanged."""
        values = np.asarray(samples, dtype=np.float32)
        if not self.is_image:
            return values.copy()
        return np.clip((values + 1.0) * 127.5, 0.0, 255.0)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The name of every class, index order (``()`` for unlabelled data): CLASS_NAMES
        where the dataset has names, else the class indices as text."""
        names = CLASS_NAMES.get(self.name, ())
        return names if len(names) == self.classes else tuple(map(str, range(self.classes)))


DIGITS = tuple("0123456789")
# the datasets' own label names, in label order (the synthetic set's classes are its 10
# blob patterns: shown by index)
CLASS_NAMES = {
    "mnist": DIGITS,
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                      "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                "ship", "truck"),
}

NATIVE_SIZES = {"mnist": 28, "fashion-mnist": 28, "cifar10": 32, "celeba": 64, "synthetic": 28}
CELEBA_SIZES = (32, 64)
DATASETS = tuple(NATIVE_SIZES) + TOY_DATASETS


def dataset_spec(name: str, image_size: int = 0, synthetic_size: int = 6000) -> DatasetSpec:
    """The description of dataset ``name`` at ``image_size`` (0: its native size).

    Only CelebA can be resized (to 32 or 64); the other datasets keep their own size.
    Raises DataError naming the valid choices.
    """
    if name in TOY_DATASETS:
        if image_size:
            raise DataError(f"--image-size {image_size}: {name} holds 2-D points, not images")
        return DatasetSpec(name, (2,), 0, TOY_TRAIN_SIZE, TOY_TEST_SIZE)
    if name not in NATIVE_SIZES:
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    size = image_size or NATIVE_SIZES[name]
    if name == "celeba":
        if size not in CELEBA_SIZES:
            raise DataError(f"--image-size for celeba must be one of {CELEBA_SIZES}, got {size}")
    elif size != NATIVE_SIZES[name]:
        raise DataError(f"--image-size {size}: {name} images are {NATIVE_SIZES[name]}x"
                        f"{NATIVE_SIZES[name]} and are not resized (only celeba is)")
    if name in ("mnist", "fashion-mnist"):
        return DatasetSpec(name, (1, 28, 28), 10, 60000, 10000)
    if name == "cifar10":
        return DatasetSpec(name, (3, 32, 32), 10, 50000, 10000)
    if name == "celeba":
        # the aligned set: 202,599 images; list_eval_partition.txt: train 162,770, test 19,962
        return DatasetSpec(name, (3, size, size), 0, 162770, 19962)
    return DatasetSpec(name, (1, 28, 28), 10, synthetic_size, 1000)
