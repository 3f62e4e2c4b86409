"""Every file-based dataset converted once into an HDF5 uint8 cache.

``<cache>/<dataset>-<size>-<key>.h5``, key = a hash of the source folder (or
"default" for the offline copies), holds
  train_images (n, C, H, W) uint8, chunked per image; train_labels (n,) uint8
  test_images, test_labels                         the same for the test split
  attrs: format, dataset, source, fingerprint, checksum ("fletcher32"), complete
The fingerprint hashes what the source holds, not where it lies: every file's name
below the source folder, its size and its contents (above ``CONTENT_BYTES`` in all,
CelebA's 200,000 JPEGs, its modification time instead of its contents), so that two
checkouts, venvs or hosts with the same data share one cache, and a changed source
rebuilds it. Built by one process at a time (``io.lock.building``: the other jobs, on
this host or another, wait for it and then use its file) and written atomically, so
readers on other nodes never see half a file; workers read only their shard's rows. Every chunk
carries a Fletcher-32 checksum (io/integrity.py), verified at each read: the
whole cache once per node at start-up (a damaged cache is rebuilt, with a line
saying so), each row as a rank reads it.
"""
from __future__ import annotations

import hashlib
import os

import h5py
import numpy as np

from ..io import integrity
from ..io.atomic import atomic_h5
from ..io.lock import building
from .registry import kind_of
from .spec import DataError, DatasetSpec

FORMAT = "mpi-gan-dataset-cache"
KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def source(spec: DatasetSpec, data_dir: str):
    """(files to fingerprint, loader returning the four arrays, description) of ``spec``."""
    kind = kind_of(spec.name)
    if kind.source is None:
        raise DataError(f"{spec.name} has no file source")
    return kind.source(spec, data_dir)


CONTENT_BYTES = 512 * 2**20  # sources up to this size are fingerprinted by their contents


def fingerprint(files: list[str]) -> str:
    """32 hex digits naming the data of ``files``: each one's path below their common
    folder, size, and contents (or modification time, above ``CONTENT_BYTES`` in all)."""
    stats = [os.stat(path) for path in files]  # once each: CelebA has 200,000 files
    by_contents = sum(st.st_size for st in stats) <= CONTENT_BYTES
    root = os.path.dirname(files[0]) if len(files) == 1 else os.path.commonpath(files)
    h = hashlib.blake2b(digest_size=16)
    for path, st in zip(files, stats):
        h.update(f"{os.path.relpath(path, root)}:{st.st_size}:".encode())
        if by_contents:
            h.update(file_digest(path))
        else:
            h.update(str(st.st_mtime_ns).encode())
        h.update(b"\n")
    return h.hexdigest()


def file_digest(path: str) -> bytes:
    """blake2b of the file at ``path``, read in 1 MiB pieces."""
    h = hashlib.blake2b()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.digest()


def cache_path(spec: DatasetSpec, data_dir: str, cache_dir: str) -> str:
    where = os.path.realpath(data_dir) if data_dir else "default"
    key = hashlib.blake2b(where.encode(), digest_size=6).hexdigest()
    return os.path.join(cache_dir, f"{spec.name}-{spec.shape[1]}-{key}.h5")


def check_cache(path: str, spec: DatasetSpec, stamp: str) -> str:
    """Why the cache at ``path`` cannot be used ("" if it can): absent, partial, of an older
    format or source, or damaged (a chunk fails its checksum: every chunk is read)."""
    if not os.path.exists(path):
        return "absent"
    try:
        with h5py.File(path, "r") as f:
            if not (f.attrs.get("format") == FORMAT and int(f.attrs.get("complete", 0)) == 1
                    and f.attrs.get("fingerprint") == stamp
                    and f.attrs.get("checksum") == integrity.FILTER
                    and f["train_images"].shape[1:] == spec.shape):
                return "stale"  # another source, an older format, or an unfinished write
            integrity.verify(f, path)
    except integrity.ChecksumError as exc:
        return f"damaged: {exc}"
    except (OSError, KeyError) as exc:
        return f"damaged: {path} cannot be read ({exc})"
    return ""


def ensure_cache(spec: DatasetSpec, data_dir: str, cache_dir: str, log=print) -> str:
    """Path of ``spec``'s HDF5 cache, converting its source first if needed (no cache, an
    outdated one, or one that fails its checksums)."""
    files, load, description = source(spec, data_dir)
    stamp = fingerprint(files)
    path = cache_path(spec, data_dir, cache_dir)
    if not check_cache(path, spec, stamp):
        return path
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the dataset cache directory {cache_dir!r}: {exc}") \
            from exc
    with building(path, log):  # one builder; the others wait, then find its file
        problem = check_cache(path, spec, stamp)
        if problem:
            convert(path, spec, stamp, load, description, problem, log)
    return path


def convert(path: str, spec: DatasetSpec, stamp: str, load, description: str, problem: str,
            log) -> None:
    """Write the cache at ``path`` from the source's arrays (``load(log)``), atomically."""
    if problem.startswith("damaged"):
        log(f"the dataset cache {problem[len('damaged: '):]}: rebuilding it")
    log(f"converting {description} into {path} (once)")
    arrays = load(log)
    # about the arrays' bytes (stored uncompressed), for a full disk's message
    with atomic_h5(path, size_hint=sum(np.asarray(arrays[key]).nbytes for key in KEYS)) as f:
        for key in KEYS:
            array = np.ascontiguousarray(arrays[key])
            chunks = (min(256, max(len(array), 1)),) + array.shape[1:] if len(array) else None
            integrity.create(f, key, array, chunks=chunks)
        f.attrs.update({"format": FORMAT, "dataset": spec.name, "source": description,
                        "fingerprint": stamp, "checksum": integrity.FILTER, "complete": 1})
        integrity.seal(f)
