"""Every dataset described once: image shape, classes, nominal sizes, and how it is read.

A ``DatasetSpec`` is the single place a shape (C, H, W), a class count or a
nominal train/test size comes from; models, the transport's buffers, the
traffic models and the configuration checks all read it. The sizes actually
used at run time are those of the loaded files (a test's small IDX file holds
30 images, not 60,000). A ``DatasetKind`` is a dataset as the registry
(``registry.py``) knows it: its spec at a given size and where its samples come
from (files converted once into the HDF5 cache, or generated from the seed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np



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


Arrays = dict  # "train_images", "train_labels", "test_images", "test_labels" -> np.ndarray


def split_arrays(train: tuple, test: tuple) -> Arrays:
    """The four arrays of a dataset from its (samples, labels) pairs of each split."""
    return {"train_images": train[0], "train_labels": train[1], "test_images": test[0],
            "test_labels": test[1]}
# (files to fingerprint, load(log) -> Arrays, a description of the source)
Source = tuple[list, Callable[[Callable], Arrays], str]


@dataclass(frozen=True)
class DatasetKind:
    """A dataset of the registry: ``spec(image_size, synthetic_size)`` (DataError for a
    size it does not come in); either ``source(spec, data_dir)``, its files (converted
    once into the HDF5 cache, ``cache.py``), or ``generate(spec, seed, synthetic_size)``,
    its arrays and a cache key made from the seed (no files)."""

    name: str
    spec: Callable[[int, int], DatasetSpec]
    source: Callable[[DatasetSpec, str], Source] | None = None
    generate: Callable[[DatasetSpec, int, int], tuple[Arrays, str]] | None = None


def fixed_size(name: str, shape: tuple[int, ...], classes: int, train: int, test: int
               ) -> Callable[[int, int], DatasetSpec]:
    """The spec function of a dataset of one image size (``--image-size`` 0 or that size)."""
    side = shape[-1]

    def spec(image_size: int, synthetic_size: int) -> DatasetSpec:
        if image_size and image_size != side:
            raise DataError(f"--image-size {image_size}: {name} images are {side}x{side} and "
                            "are not resized (only celeba is)")
        return DatasetSpec(name, shape, classes, train, test)
    return spec


def need_dir(spec: DatasetSpec, data_dir: str, what: str) -> str:
    """``data_dir``, or DataError: ``spec``'s dataset has no offline copy."""
    if not data_dir:
        raise DataError(f"{spec.name} needs --data-dir: {what}; no offline copy of it can be "
                        "installed here")
    return data_dir
