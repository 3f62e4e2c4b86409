"""Checksums on every HDF5 file the project writes, verified whenever it is read.

Every dataset is written chunked with HDF5's Fletcher-32 filter (``create``): HDF5 checks
each chunk's checksum whenever the chunk is read, by this program or by any user's h5py,
and a chunk that fails raises an error instead of returning wrong numbers. Files are
written in the HDF5 1.8 file format or later (``LIBVER``), whose structural metadata
(superblock, object headers, numeric attributes) carry checksums too;
variable-length strings (string attributes: the config, the format names) live in HDF5's
global heap, which has none, so ``seal`` stores a digest of an object's attributes
(``ATTRS_DIGEST``) that ``verify`` checks. A 0-d array is stored as shape (1,) with the
attribute ``scalar`` = 1 (HDF5 cannot chunk a scalar); ``read`` gives it back as 0-d.

Fletcher-32 has a blind spot that a stray write can hit: a chunk overwritten whole, its
checksum included, with 0xFF bytes (or 0x00) checks out. So each dataset also carries the
CRC-32 of its whole contents in C order (attribute ``crc32``, in the checksummed object
header), kept by every writer (``overwrite``, ``write_rows``), checked by ``verify`` and by
``read``. Files written before it have none and are checked by Fletcher-32 alone. A file
updated in place (the run file) is marked ``updating`` for the length of each update: a
chunk reaches the file at once but its CRC only at the next flush, so a writer killed in
between leaves a mismatch that is an unfinished update, not damage, and is named so.

``verify`` reads every chunk of a file once (a checkpoint before resuming from it, a
dataset cache when a node starts), checks every sealed object's attributes, and names
the first dataset or object that fails; ``is_checksum_failure`` tells a failed checksum
from other read errors.
"""
from __future__ import annotations

import contextlib
import hashlib
import zlib

import h5py
import numpy as np

# the HDF5 1.8 format at least: checksummed superblock and object headers (version 2);
# not 1.10's (superblock 3), whose consistency flags leave a file that a killed process
# had open for writing unreadable until ``h5clear``; readable by HDF5 >= 1.8
LIBVER = ("v108", "latest")
FILTER = "fletcher32"
ONE_CHUNK = 1 << 26  # bytes: a fixed-size array up to this size is one chunk
# how HDF5 says a checksum failed (a chunk's Fletcher-32, a metadata block's own)
_FAILURES = ("filter returned failure", "fletcher32", "metadata checksum",
             "checksum verification failed")
ATTRS_DIGEST = "attrs_blake2b"
CONTENT_CRC = "crc32"
UPDATING = "updating"  # root attribute: 1 while a writer updates the file in place


def open_for_writing(path: str, mode: str) -> h5py.File:
    """``path`` opened to write (``mode`` "w" or "r+"), without HDF5's chunk cache: every
    chunk goes to the file at its write, so a full disk raises there, where the caller
    catches it, not later while h5py frees a dataset (an exception Python can only print)."""
    return h5py.File(path, mode, libver=LIBVER if mode == "w" else None, rdcc_nbytes=0)


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
    _stamp(dataset, content_crc(_as_stored(dataset, data)))
    return dataset


def content_crc(array: np.ndarray, crc: int = 0) -> int:
    """CRC-32 of ``array``'s bytes in C order, continuing ``crc`` (that of the bytes before:
    the CRC of a concatenation is computed piece by piece)."""
    array = np.ascontiguousarray(array)
    return zlib.crc32(memoryview(array.reshape(-1)).cast("B"), crc) if array.size else crc


def _as_stored(dataset: h5py.Dataset, array) -> np.ndarray:
    return np.asarray(array, dtype=dataset.dtype)


def _stamp(dataset: h5py.Dataset, crc: int) -> None:
    if dataset.dtype.kind != "O":  # variable-length data have no fixed bytes to sum
        dataset.attrs[CONTENT_CRC] = np.uint32(crc)


def overwrite(dataset: h5py.Dataset, array) -> None:
    """Replace the whole contents of ``dataset`` (same shape) and its CRC."""
    array = _as_stored(dataset, array)
    if array.shape != dataset.shape and not (array.ndim == 0 and dataset.shape == (1,)):
        raise ValueError(f"{dataset.name}: shape {array.shape}, the dataset's {dataset.shape}")
    array = array.reshape(dataset.shape)
    dataset[...] = array
    _stamp(dataset, content_crc(array))


def write_rows(dataset: h5py.Dataset, start: int, array) -> None:
    """Rows ``start``.. of a resizable dataset (axis 0) become ``array`` (the dataset grows
    or shrinks to ``start + len(array)`` rows), and its CRC follows: continued from the
    stored one when appending at the end, else recomputed from the rows kept."""
    array = _as_stored(dataset, array)
    before = dataset.shape[0]
    crc = dataset.attrs.get(CONTENT_CRC)
    dataset.resize(start + len(array), axis=0)
    dataset[start:] = array
    if crc is None or start != before:
        crc = content_crc(dataset[:start])
    _stamp(dataset, content_crc(array, int(crc)))


@contextlib.contextmanager
def updating(f: h5py.File):
    """Mark the open file ``f`` as being updated in place for the block (flushed before and
    after): a CRC mismatch while the mark stands means the update did not finish."""
    f.attrs[UPDATING] = 1
    f.flush()
    yield f
    f.attrs[UPDATING] = 0
    f.flush()


def _check_crc(dataset: h5py.Dataset, crc: int, where: str) -> None:
    stored = dataset.attrs.get(CONTENT_CRC)
    if stored is not None and int(stored) != crc:
        if int(dataset.file.attrs.get(UPDATING, 0)) == 1:
            raise ChecksumError(f"{where}: dataset {dataset.name} fails its checksum: the "
                                "file's last update did not finish (its writer was stopped "
                                "while writing)")
        raise ChecksumError(f"{where}: dataset {dataset.name} fails its checksum")


def read(dataset: h5py.Dataset) -> np.ndarray:
    """The whole dataset as an array (0-d for one written from a 0-d array); ChecksumError
    if its contents do not match their CRC (a chunk's Fletcher-32 is checked by HDF5)."""
    array = np.asarray(dataset[()])
    _check_crc(dataset, content_crc(array), dataset.file.filename)
    return array.reshape(()) if dataset.attrs.get("scalar", 0) == 1 else array


def is_checksum_failure(exc: BaseException) -> bool:
    """Whether an h5py read error is a failed checksum (of a chunk or of metadata)."""
    text = str(exc).lower()
    return isinstance(exc, ChecksumError) or any(s in text for s in _FAILURES)


def _attrs_digest(obj) -> str:
    """blake2b of ``obj``'s attributes (but the digest's own), as h5py reads them back."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(obj.attrs):
        if name == ATTRS_DIGEST:
            continue
        value = obj.attrs[name]
        value = value.decode() if isinstance(value, bytes) else value
        value = value.tolist() if isinstance(value, np.ndarray) else \
            value.item() if isinstance(value, np.generic) else value
        h.update(f"{name}={value!r}\n".encode())
    return h.hexdigest()


def check_attrs(obj, where: str = "") -> None:
    """ChecksumError if ``obj`` is sealed (``seal``) and its attributes changed since."""
    if ATTRS_DIGEST in obj.attrs and obj.attrs[ATTRS_DIGEST] != _attrs_digest(obj):
        raise ChecksumError(f"{where or obj.file.filename}: the attributes of {obj.name} "
                            "fail their checksum")


def seal(obj) -> None:
    """Store the digest of ``obj``'s attributes (a group, a dataset, ``f`` for the root):
    call it after its last attribute is written (and again after any change)."""
    obj.attrs[ATTRS_DIGEST] = _attrs_digest(obj)


def checksummed(dataset: h5py.Dataset) -> bool:
    """Whether ``dataset`` carries a checksum (written by ``create``, or empty)."""
    return dataset.fletcher32 or dataset.size == 0


def verify(f, where: str = "") -> None:
    """Read every dataset of the open file or group ``f`` a row of chunks at a time (memory:
    one row of chunks), checking each chunk's Fletcher-32 and the contents' CRC;
    ChecksumError naming the file and dataset whose checksum fails, or a dataset written
    without one. ``where`` names the file in the message (default: ``f.filename``)."""
    where = where or f.file.filename
    failed: list[str] = []

    def visit(name, obj):
        if failed:
            return
        try:
            check_attrs(obj, where)
        except ChecksumError as exc:
            failed.append(str(exc))
            return
        if not isinstance(obj, h5py.Dataset) or obj.size == 0:
            return
        if not checksummed(obj):
            failed.append(f"{where}: dataset {obj.name} carries no checksum")
            return
        try:  # slabs of whole chunk rows, in C order: each chunk read once, the CRC streamed
            rows, crc = (obj.chunks or obj.shape)[0], 0
            for start in range(0, obj.shape[0], rows):
                crc = content_crc(obj[start:start + rows], crc)
            _check_crc(obj, crc, where)
        except ChecksumError as exc:
            failed.append(str(exc))
        except OSError as exc:
            why = "fails its checksum" if is_checksum_failure(exc) else f"cannot be read ({exc})"
            failed.append(f"{where}: dataset {obj.name} {why}")

    try:
        visit("", f)
        f.visititems(visit)
    except (OSError, RuntimeError, KeyError) as exc:  # the metadata itself
        raise ChecksumError(f"{where}: its structure fails to read ({exc})") from exc
    if failed:
        raise ChecksumError(failed[0])
