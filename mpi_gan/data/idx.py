"""IDX files (MNIST, Fashion-MNIST): the format of LeCun's and Zalando's releases.

Images come out as uint8 (n, 1, 28, 28), labels as uint8 (n,). Files may be
plain or gzip-compressed; plain files are memory-mapped.
"""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from ..errors import type_name
from .spec import DataError, DatasetKind, DatasetSpec, Source, fixed_size

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# where each dataset's files may sit below --data-dir (torchvision's raw/ layout too)
SUBDIRS = {"mnist": ("", "raw", os.path.join("MNIST", "raw")),
           "fashion-mnist": ("", "raw", os.path.join("FashionMNIST", "raw"))}


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
    except (OSError, EOFError, zlib.error) as exc:  # a bad gzip stream is a zlib.error
        raise DataError(f"cannot read IDX file {path} (corrupt or truncated?): "
                        f"{type_name(exc)}: {exc}") from exc
    count = int(np.prod(shape)) if shape else 0
    if size != count:
        raise DataError(f"{path} is truncated or corrupt: header promises {count} bytes, "
                        f"file holds {size}")
    if path.endswith(".gz"):
        return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
    if count == 0:
        return np.zeros(shape, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", offset=header, shape=shape)


def find_idx_files(data_dir: str, dataset: str = "mnist") -> dict[str, str]:
    """Locate the four IDX files of ``dataset`` under ``data_dir``; DataError if absent."""
    if not os.path.isdir(data_dir):
        raise DataError(f"--data-dir {data_dir!r} does not exist or is not a directory")
    subdirs = SUBDIRS[dataset]
    found = {}
    for key, name in IDX_NAMES.items():
        for sub in subdirs:
            for suffix in ("", ".gz"):
                candidate = os.path.join(data_dir, sub, name + suffix)
                if os.path.isfile(candidate):
                    found[key] = candidate
                    break
            if key in found:
                break
        if key not in found:
            raise DataError(f"--data-dir {data_dir!r} has no {name}[.gz] (looked in "
                            f"{', '.join(os.path.join(data_dir, s) for s in subdirs)})")
    return found


def check_arrays(arrays: dict[str, np.ndarray], origin: str, image_shape, classes: int) -> None:
    """DataError unless images are (n, *image_shape) with n labels below ``classes``."""
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[1:] != tuple(image_shape) or labels.shape != (len(images),):
            raise DataError(f"{origin}: {split} images {images.shape} / labels {labels.shape} "
                            f"do not hold {'x'.join(map(str, image_shape))} images with labels")
        if classes and labels.size and labels.max() >= classes:
            raise DataError(f"{origin}: {split} labels outside 0..{classes - 1}")


def load_idx_dir(data_dir: str, dataset: str = "mnist") -> dict[str, np.ndarray]:
    """The four arrays of an IDX dataset: uint8 images (n, 1, 28, 28), uint8 labels (n,)."""
    arrays = {}
    for key, path in find_idx_files(data_dir, dataset).items():
        array = read_idx(path)
        arrays[key] = array[:, None] if key.endswith("images") and array.ndim == 3 else array
    check_arrays(arrays, data_dir, (1, 28, 28), 10)
    return arrays


FASHION_DEBIAN = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist


def idx_source(spec: DatasetSpec, folder: str) -> Source:
    """The IDX files of ``spec``'s dataset in ``folder``."""
    files = list(find_idx_files(folder, spec.name).values())
    return files, lambda log: load_idx_dir(folder, spec.name), f"IDX files in {folder}"


def fashion_source(spec: DatasetSpec, data_dir: str) -> Source:
    """Fashion-MNIST: ``--data-dir``'s IDX files, else Debian's dataset-fashion-mnist."""
    if not data_dir:
        if not os.path.isdir(FASHION_DEBIAN):
            raise DataError(
                "no Fashion-MNIST source: pass --data-dir with its IDX files (torchvision's "
                "FashionMNIST/raw/ layout works), or install Debian's copy with `apt-get "
                f"install dataset-fashion-mnist` ({FASHION_DEBIAN})")
        data_dir = FASHION_DEBIAN
    return idx_source(spec, data_dir)


FASHION_MNIST = DatasetKind("fashion-mnist",
                            fixed_size("fashion-mnist", (1, 28, 28), 10, 60000, 10000),
                            source=fashion_source)
