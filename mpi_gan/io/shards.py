"""Checkpoint shards: each rank writes its own state into its own HDF5 file, in parallel;
the checkpoint's manifest (``io/checkpoint.py``, written last by rank 0) lists them.

A checkpoint of iteration I written by one launch of a run (``token``: 8 hex digits that
rank 0 draws at start-up and every rank shares) is
  ``<out>/checkpoints/ckpt_<I:08d>.h5``              the manifest: run record, tables,
                                                     traffic, the shards' table, and
                                                     ``/state/rank_<r>`` as HDF5 external
                                                     links into the shards
  ``<out>/checkpoints/ckpt_<I:08d>.<token>/rank_<r>.h5``  rank r's shard
A shard: attrs format (``FORMAT``), format_version, algorithm, iteration, rank; the
group ``/state`` holding the rank's named tensors (``io/state.py``), every dataset
checksummed (``io/integrity.py``). Each shard is written atomically (temporary file,
fsync, rename), then its size and BLAKE2b digest (16 bytes, of the whole file) go to rank
0 (``ShardRecord``), which writes them into the manifest. A shard that is missing, or
whose size or digest differs from its manifest's, makes the checkpoint unusable.

A new launch writes into a directory of its own token, so a checkpoint it rewrites (a
run resumed from an older one) stays whole until the new manifest replaces it. Shard
directories that no manifest names (a launch killed before its manifest) are removed
(``remove_orphans``) when the run directory's next job starts, and with their manifest
when it is pruned.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
from dataclasses import dataclass

import h5py
import numpy as np
import torch

from . import integrity
from .atomic import atomic_h5
from .lock import ensure_held

FORMAT = "mpi-gan-checkpoint-shard"
FORMAT_VERSION = 1
DIGEST_BYTES = 16
_DIRECTORY = re.compile(r"ckpt_(\d{8})\.([0-9a-f]{8})$")


class ShardError(RuntimeError):
    """A shard is missing, truncated or does not match its manifest."""


@dataclass(frozen=True)
class ShardRecord:
    """What a manifest keeps of one rank's shard: ``rank`` (world rank), ``nbytes`` (the
    file's size in bytes) and ``digest`` (BLAKE2b of the file, 16 bytes)."""

    rank: int
    nbytes: int
    digest: bytes

    def to_array(self) -> np.ndarray:
        """int64 (4,): rank, bytes, and the digest as two int64 (how a report travels)."""
        return np.concatenate([np.array([self.rank, self.nbytes], dtype=np.int64),
                               np.frombuffer(self.digest, dtype=np.int64)])

    @classmethod
    def from_array(cls, array: np.ndarray) -> "ShardRecord":
        array = np.asarray(array, dtype=np.int64)
        return cls(int(array[0]), int(array[1]), array[2:4].tobytes())


def directory_name(iteration: int, token: int) -> str:
    """``ckpt_<iteration:08d>.<token:08x>``: the shard directory of one launch's checkpoint."""
    return f"ckpt_{iteration:08d}.{token:08x}"


def shard_name(rank: int) -> str:
    return f"rank_{rank}.h5"


def file_digest(path: str, block: int = 1 << 22) -> bytes:
    """BLAKE2b (16 bytes) of a file's contents, read ``block`` bytes at a time."""
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    with open(path, "rb") as f:
        while True:
            chunk = f.read(block)
            if not chunk:
                return h.digest()
            h.update(chunk)


def write_entries(group, entries) -> None:
    """Named tensors as checksummed datasets of ``group`` (names may contain '/')."""
    for name, tensor in entries:
        integrity.create(group, name, tensor.detach().cpu().numpy())


def read_entries(group) -> dict[str, torch.Tensor]:
    """The datasets under ``group`` as tensors, named by their paths below it (each
    dataset's checksum checked)."""
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = torch.from_numpy(np.array(integrity.read(obj)))
    group.visititems(visit)
    return out


def write_shard(directory: str, rank: int, iteration: int, algorithm: str, entries
                ) -> ShardRecord:
    """Write rank ``rank``'s named tensors (``entries``: [(name, tensor)]) as
    ``<directory>/rank_<rank>.h5``, atomically; returns its record. A full disk raises
    DiskFullError; nothing is left but the shards written before. LockLost (nothing
    written) on a process that held the run directory's lock and lost it (rank 0)."""
    ensure_held()
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, shard_name(rank))
    with atomic_h5(path) as f:
        f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION,
                        "algorithm": algorithm, "iteration": iteration, "rank": rank})
        write_entries(f.create_group("state"), entries)
        integrity.seal(f)
    return ShardRecord(rank, os.path.getsize(path), file_digest(path))


def check_size(path: str, record: ShardRecord, manifest: str) -> None:
    """ShardError unless the shard file exists with the size ``record`` gives (cheap: no
    read; ``verify`` reads it)."""
    check_file_size(path, record.nbytes, f"rank {record.rank}'s shard", manifest)


def check_file_size(path: str, nbytes: int, what: str, manifest: str) -> None:
    """ShardError unless the file ``path`` (``what`` it is, for the message) that the
    manifest ``manifest`` names exists with ``nbytes`` bytes."""
    try:
        size = os.path.getsize(path)
    except OSError:
        raise ShardError(f"{manifest}: {what} {path} is missing") from None
    if size != nbytes:
        raise ShardError(f"{manifest}: {what} {path} has {size} bytes, its manifest says "
                         f"{nbytes} (truncated or replaced)")


def verify(path: str, record: ShardRecord, manifest: str) -> None:
    """ShardError unless the shard file has ``record``'s size and digest."""
    check_size(path, record, manifest)
    if file_digest(path) != record.digest:
        raise ShardError(f"{manifest}: rank {record.rank}'s shard {path} does not match the "
                         "checksum in its manifest: refused (changed or damaged after it was "
                         "written)")


def write_table(f: h5py.File, directory: str, records: list[ShardRecord]) -> None:
    """The manifest's ``/shards`` (rank, bytes, blake2b per shard; attribute ``directory``,
    relative to the manifest) and ``/state/rank_<r>``, external links to each shard's
    ``/state`` (h5py and h5ls follow them)."""
    records = sorted(records, key=lambda r: r.rank)
    group = f.create_group("shards")
    group.attrs["directory"] = directory
    integrity.seal(group)
    integrity.create(group, "rank", np.array([r.rank for r in records], dtype=np.int64))
    integrity.create(group, "bytes", np.array([r.nbytes for r in records], dtype=np.int64))
    integrity.create(group, "blake2b", np.frombuffer(
        b"".join(r.digest for r in records), dtype=np.uint8).reshape(len(records),
                                                                     DIGEST_BYTES))
    state = f.create_group("state")
    for r in records:
        state[f"rank_{r.rank}"] = h5py.ExternalLink(f"{directory}/{shard_name(r.rank)}",
                                                    "/state")


def read_table(f: h5py.File) -> tuple[str, dict[int, ShardRecord]]:
    """(directory, rank -> record) of a manifest open for reading."""
    group = f["shards"]
    ranks = integrity.read(group["rank"])
    nbytes = integrity.read(group["bytes"])
    digests = integrity.read(group["blake2b"])
    records = {int(r): ShardRecord(int(r), int(n), bytes(d.tobytes()))
               for r, n, d in zip(ranks, nbytes, digests)}
    return str(group.attrs["directory"]), records


def directories(run_dir: str) -> dict[str, int]:
    """The shard directories of a run directory: path -> the iteration in its name."""
    found = {}
    for path in glob.glob(os.path.join(run_dir, "checkpoints", "ckpt_*.*")):
        match = _DIRECTORY.search(path)
        if match and os.path.isdir(path):
            found[path] = int(match.group(1))
    return found


def remove_orphans(run_dir: str, named: set[str], unreadable: set[int] | None) -> list[str]:
    """Delete the shard directories that no manifest names. ``named``: the directory names
    the manifests give; ``unreadable``: iterations whose manifest cannot be read (their
    directories are kept), None to keep everything. Returns the paths removed."""
    if unreadable is None:
        return []
    removed = []
    for path, iteration in directories(run_dir).items():
        if os.path.basename(path) not in named and iteration not in unreadable:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
