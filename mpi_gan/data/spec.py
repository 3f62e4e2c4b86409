"""Every dataset described once: image shape, classes, nominal sizes.

A ``DatasetSpec`` is the single place a shape (C, H, W), a class count or a
nominal train/test size comes from; models, the transport's buffers, the
traffic models and the configuration checks all read it. The sizes actually
used at run time are those of the loaded files (a test's small IDX file holds
30 images, not 60,000).
"""
from __future__ import annotations

from dataclasses import dataclass


class DataError(RuntimeError):
    """Training data is missing, unreadable or malformed."""


@dataclass(frozen=True)
class DatasetSpec:
    """name; shape (C, H, W) of one image; classes (0: unlabelled); nominal sizes."""

    name: str
    shape: tuple[int, int, int]
    classes: int
    train_size: int
    test_size: int

    @property
    def sample_size(self) -> int:
        """Values per image, C * H * W."""
        c, h, w = self.shape
        return c * h * w


NATIVE_SIZES = {"mnist": 28, "fashion-mnist": 28, "cifar10": 32, "celeba": 64, "synthetic": 28}
CELEBA_SIZES = (32, 64)
DATASETS = tuple(NATIVE_SIZES)


def dataset_spec(name: str, image_size: int = 0, synthetic_size: int = 6000) -> DatasetSpec:
    """The description of dataset ``name`` at ``image_size`` (0: its native size).

    Only CelebA can be resized (to 32 or 64); the other datasets keep their own size.
    Raises DataError naming the valid choices.
    """
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
