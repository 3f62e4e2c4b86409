"""Checksums on every HDF5 file the project writes, verified whenever it is read.

Every dataset is written chunked with HDF5's Fletcher-32 filter (``create``): HDF5 checks
each chunk's checksum whenever the chunk is read, by this program or by any user's h5py,
and a chunk that fails raises an error instead of returning wrong numbers. Files are
written with the HDF5 1.10 file format (``LIBVER``), whose metadata (superblock, object
headers, chunk indexes) carry checksums too. A 0-d array is stored as shape (1,) with the
attribute ``scalar`` = 1 (HDF5 cannot chunk a scalar); ``read`` gives it back as 0-d.

``verify`` reads every chunk of a file once (a checkpoint before resuming from it, a
dataset cache when a node starts) and names the first dataset that fails;
``is_checksum_failure`` tells a failed checksum from other read errors.
"""
from __future__ import annotations

import h5py
import numpy as np

LIBVER = ("v110", "latest")  # metadata checksums; readable by HDF5 >= 1.10
FILTER = "fletcher32"
ONE_CHUNK = 1 << 26  # bytes: a fixed-size array up to this size is one chunk
_FAILURES = ("filter returned failure", "fletcher32", "checksum")


class ChecksumError(OSError):
    """A dataset (or the file's metadata) does not match its checksum: the file was changed
    after it was written (a disk or network fault, a stray write)."""


def create(group, name: str, data: np.ndarray, **kwargs) -> h5py.Dataset:
    """``group[name]`` holding ``data``, chunked and Fletcher-32 checksummed (an empty array
    is stored as it is: it has no bytes to protect). Chunks: ``kwargs["chunks"]`` if given,
    else the whole array up to ``ONE_CHUNK`` bytes, else h5py's choice."""
    data = np.asarray(data)
    scalar = data.ndim == 0
    if scalar:
        data = data.reshape(1)
    if data.size == 0 and "maxshape" not in kwargs:
        return group.create_dataset(name, data=data, **kwargs)
    if "chunks" not in kwargs:  # one chunk (one checksum) per array up to ONE_CHUNK bytes
        small = data.nbytes <= ONE_CHUNK and "maxshape" not in kwargs
        kwargs["chunks"] = data.shape if small else True
    dataset = group.create_dataset(name, data=data, fletcher32=True, **kwargs)
    if scalar:
        dataset.attrs["scalar"] = 1
    return dataset


def read(dataset: h5py.Dataset) -> np.ndarray:
    """The whole dataset as an array (0-d for one written from a 0-d array)."""
    array = dataset[()]
    return np.asarray(array).reshape(()) if dataset.attrs.get("scalar", 0) == 1 else array


def is_checksum_failure(exc: BaseException) -> bool:
    """Whether an h5py read error is a failed checksum (of a chunk or of metadata)."""
    text = str(exc).lower()
    return isinstance(exc, ChecksumError) or any(s in text for s in _FAILURES)


def checksummed(dataset: h5py.Dataset) -> bool:
    """Whether ``dataset`` carries a checksum (written by ``create``, or empty)."""
    return dataset.fletcher32 or dataset.size == 0


def verify(f, where: str = "") -> None:
    """Read every dataset of the open file or group ``f`` chunk by chunk (memory: one chunk);
    ChecksumError naming the file and dataset whose checksum fails, or a dataset written
    without one. ``where`` names the file in the message (default: ``f.filename``)."""
    where = where or f.file.filename
    failed: list[str] = []

    def visit(name, obj):
        if failed or not isinstance(obj, h5py.Dataset) or obj.size == 0:
            return
        if not checksummed(obj):
            failed.append(f"{where}: dataset {obj.name} carries no checksum")
            return
        try:
            for chunk in obj.iter_chunks():
                obj[chunk]
        except OSError as exc:
            why = "fails its checksum" if is_checksum_failure(exc) else f"cannot be read ({exc})"
            failed.append(f"{where}: dataset {obj.name} {why}")

    try:
        f.visititems(visit)
    except (OSError, RuntimeError, KeyError) as exc:  # the metadata itself
        raise ChecksumError(f"{where}: its structure fails to read ({exc})") from exc
    if failed:
        raise ChecksumError(failed[0])
