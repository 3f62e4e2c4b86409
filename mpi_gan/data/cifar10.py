"""CIFAR-10 from its official binary version (``cifar-10-batches-bin``).

Each of ``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin`` is a
sequence of 3073-byte records: one label byte (0..9), then 1024 red, 1024
green and 1024 blue bytes of a 32x32 image in row-major order. The Python
pickle version of the release is never read.
"""
from __future__ import annotations

import os

import numpy as np

from .idx import check_arrays
from .spec import DataError, DatasetKind, DatasetSpec, Source, fixed_size, need_dir

RECORD = 1 + 3 * 32 * 32
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"


def find_batches_dir(data_dir: str) -> str:
    """``data_dir`` or its ``cifar-10-batches-bin`` subfolder, whichever holds the files."""
    if not os.path.isdir(data_dir):
        raise DataError(f"--data-dir {data_dir!r} does not exist or is not a directory")
    for candidate in (data_dir, os.path.join(data_dir, "cifar-10-batches-bin")):
        if all(os.path.isfile(os.path.join(candidate, f)) for f in TRAIN_FILES + (TEST_FILE,)):
            return candidate
    if os.path.isfile(os.path.join(data_dir, "data_batch_1")) or os.path.isdir(
            os.path.join(data_dir, "cifar-10-batches-py")):
        raise DataError(f"--data-dir {data_dir!r} holds the Python-pickle CIFAR-10, which is "
                        "never loaded: use the binary version (cifar-10-binary.tar.gz, "
                        "folder cifar-10-batches-bin)")
    raise DataError(f"--data-dir {data_dir!r} has no CIFAR-10 binary batches "
                    f"({', '.join(TRAIN_FILES)}, {TEST_FILE}; looked in it and "
                    "cifar-10-batches-bin/)")


def read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 3, 32, 32), labels uint8 (n,)) of one binary batch file."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {exc}") from exc
    if raw.size % RECORD:
        raise DataError(f"{path} is truncated or corrupt: {raw.size} bytes is not a multiple "
                        f"of the {RECORD}-byte record")
    records = raw.reshape(-1, RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].copy()


def load_cifar10(data_dir: str) -> dict[str, np.ndarray]:
    """The four arrays (train = batches 1..5 in order, test = test_batch)."""
    folder = find_batches_dir(data_dir)
    train = [read_batch(os.path.join(folder, f)) for f in TRAIN_FILES]
    test_images, test_labels = read_batch(os.path.join(folder, TEST_FILE))
    arrays = {"train_images": np.concatenate([im for im, _ in train]),
              "train_labels": np.concatenate([lb for _, lb in train]),
              "test_images": test_images, "test_labels": test_labels}
    check_arrays(arrays, folder, (3, 32, 32), 10)
    return arrays


def source_files(data_dir: str) -> list[str]:
    folder = find_batches_dir(data_dir)
    return [os.path.join(folder, f) for f in TRAIN_FILES + (TEST_FILE,)]


def source(spec: DatasetSpec, data_dir: str) -> Source:
    folder = need_dir(spec, data_dir, "the binary batches (cifar-10-batches-bin)")
    return source_files(folder), lambda log: load_cifar10(folder), \
        f"CIFAR-10 binary batches in {folder}"


CIFAR10 = DatasetKind("cifar10", fixed_size("cifar10", (3, 32, 32), 10, 50000, 10000),
                      source=source)
