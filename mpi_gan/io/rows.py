"""A checkpoint's table rows, kept in segment files beside its manifest, so that neither
the manifest nor what rank 0 writes at a checkpoint grows with the tables (the per-worker
loss columns grow by 8 bytes per worker per iteration: 800 MB at 1,000 workers and
100,000 iterations).

A segment is ``<out>/checkpoints/rows/<name>.h5``, ``<name>`` being the shard directory's
name of the checkpoint that wrote it (``ckpt_<I:08d>.<token>``): attrs format,
format_version, checkpoints (how many checkpoints' rows it holds); one group per table
(``metrics``, ``scores``, ...) with attribute ``start`` (the table index of its first row)
and one checksummed dataset per column (``io/integrity.py``). It is written atomically,
and the manifest names it with its size and BLAKE2b digest, as it names the shards.

Each checkpoint writes one segment holding, for every table, the rows from the first row
no segment holds yet (after a truncation, from where the table was cut) to the last.
Segments merge like a binary counter: the new segment absorbs the newest segments of the
list while they hold no more checkpoints than it does and are smaller than MERGE_BYTES,
so a manifest names at most log2(checkpoints) + 1 segments plus one per MERGE_BYTES of
rows, each row is written at most that many times, and no checkpoint rewrites more than
about 2 x MERGE_BYTES of old rows (a checkpoint at a stop signal must be quick).

The manifest's ``/rows`` group: ``name`` (the segments, oldest first), ``bytes``,
``blake2b``, ``checkpoints``, ``start`` (int64 (segments, tables): where each segment's
rows of each table begin, -1 where it has none of that table), ``table`` (the tables'
group paths) and ``length`` (each table's row count at this checkpoint). Reading overlays
the segments oldest first (a later segment's row replaces an earlier one of the same
index: rows written again after a truncation) and cuts each table to its length.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from . import integrity
from .atomic import atomic_h5
from .lock import ensure_held
from .runlog import Metrics
from .shards import DIGEST_BYTES, ShardError, check_file_size, file_digest

FORMAT = "mpi-gan-checkpoint-rows"
FORMAT_VERSION = 1
DIRECTORY = "rows"  # under <out>/checkpoints
STORE = "checkpoint rows"  # the segments as a store of rows (``Metrics.stored``)
MERGE_BYTES = 64 << 20  # a segment this large is never absorbed again


@dataclass(frozen=True)
class Segment:
    """What a manifest keeps of one segment: its ``name`` (file name without ``.h5``),
    size in bytes, BLAKE2b digest (16 bytes), how many checkpoints' rows it holds, and
    table path -> index of its first row of that table."""

    name: str
    nbytes: int
    digest: bytes
    checkpoints: int
    starts: dict = field(default_factory=dict)


def segment_path(checkpoints_dir: str, name: str) -> str:
    return os.path.join(checkpoints_dir, DIRECTORY, f"{name}.h5")


def absorbed(segments: list[Segment]) -> tuple[list[Segment], list[Segment], int]:
    """(the segments a new one leaves alone, those it absorbs, how many checkpoints it
    will hold): the binary counter of the module docstring."""
    kept, taken, count = list(segments), [], 1
    while kept and kept[-1].checkpoints <= count and kept[-1].nbytes < MERGE_BYTES:
        segment = kept.pop()
        taken.append(segment)
        count += segment.checkpoints
    return kept, taken, count


def write_segment(checkpoints_dir: str, name: str, tables: dict[str, Metrics],
                  segments: list[Segment]) -> list[Segment]:
    """Write this checkpoint's segment ``name`` of ``tables`` (atomically); returns the
    segments its manifest names, oldest first (``segments``: the previous checkpoint's).
    Once the manifest is written, ``mark_written`` records that the segments hold the
    rows. A full disk raises DiskFullError (nothing is named yet: the file is removed as
    an orphan)."""
    if name in {s.name for s in segments}:
        raise ValueError(f"row segment {name} is already named by the last manifest")
    kept, taken, count = absorbed(segments)
    starts = {}
    for path, table in tables.items():
        start = table.unstored(STORE)[0]
        for segment in taken:
            start = min(start, segment.starts.get(path, start))
        starts[path] = start
    ensure_held()
    os.makedirs(os.path.join(checkpoints_dir, DIRECTORY), exist_ok=True)
    path = segment_path(checkpoints_dir, name)
    with atomic_h5(path) as f:
        f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION,
                        "checkpoints": count})
        for table_path, table in tables.items():
            group = f.require_group(table_path)
            group.attrs["start"] = starts[table_path]
            for column, array in table.arrays(starts[table_path]).items():
                integrity.create(group, column, array)
    return kept + [Segment(name, os.path.getsize(path), file_digest(path), count, starts)]


def carried_over(manifest: str, segments: list[Segment], out: str) -> list[Segment]:
    """The segments of the manifest ``manifest`` that a run writing its checkpoints into
    ``out/checkpoints`` goes on naming: all of them if the manifest lies there, none if it
    lies elsewhere (a run started from another run's checkpoint writes every row anew
    beside its own manifests, which must not name files of another directory)."""
    here = os.path.realpath(os.path.join(out, "checkpoints"))
    return list(segments) if os.path.realpath(os.path.dirname(manifest)) == here else []


def mark_written(tables: dict[str, Metrics]) -> None:
    """The segments of the checkpoint just written hold every row of ``tables``."""
    for table in tables.values():
        table.mark_stored(STORE)


def write_index(f: h5py.File, segments: list[Segment], tables: dict[str, Metrics]) -> None:
    """The manifest's ``/rows`` (module docstring) into the open file ``f``."""
    group = f.create_group("rows")
    paths = list(tables)
    integrity.create(group, "table", text(paths))
    integrity.create(group, "length", np.array([len(t) for t in tables.values()], np.int64))
    integrity.create(group, "name", text([s.name for s in segments]))
    integrity.create(group, "bytes", np.array([s.nbytes for s in segments], np.int64))
    integrity.create(group, "blake2b", np.frombuffer(
        b"".join(s.digest for s in segments), np.uint8).reshape(len(segments), DIGEST_BYTES))
    integrity.create(group, "checkpoints", np.array([s.checkpoints for s in segments],
                                                    np.int64))
    integrity.create(group, "start", np.array(
        [[s.starts.get(p, -1) for p in paths] for s in segments], np.int64).reshape(
        len(segments), len(paths)))


def text(names: list[str]) -> np.ndarray:
    """ASCII names as a fixed-width byte array (checksummable, unlike HDF5's variable
    strings)."""
    return np.array([n.encode("ascii") for n in names], dtype=f"S{max(map(len, names), default=1)}")


def read_index(f: h5py.File) -> tuple[list[Segment], dict[str, int]]:
    """(the segments a manifest names, oldest first; table path -> its row count)."""
    group = f["rows"]
    paths = [p.decode() if isinstance(p, bytes) else str(p)
             for p in integrity.read(group["table"])]
    lengths = dict(zip(paths, (int(n) for n in integrity.read(group["length"]))))
    names = [n.decode() if isinstance(n, bytes) else str(n)
             for n in integrity.read(group["name"])]
    nbytes, digests = integrity.read(group["bytes"]), integrity.read(group["blake2b"])
    counts, starts = integrity.read(group["checkpoints"]), integrity.read(group["start"])
    segments = [Segment(name, int(nbytes[i]), bytes(digests[i].tobytes()), int(counts[i]),
                        {p: int(s) for p, s in zip(paths, starts[i]) if s >= 0})
                for i, name in enumerate(names)]
    return segments, lengths


def check_sizes(manifest: str, segments: list[Segment]) -> None:
    """ShardError unless every segment exists with its size (cheap: nothing read)."""
    directory = os.path.dirname(manifest)
    for segment in segments:
        check_file_size(segment_path(directory, segment.name), segment.nbytes,
                        "its row segment", manifest)


def read_tables(manifest: str, f: h5py.File) -> dict[str, dict[str, np.ndarray]]:
    """Every table of the open manifest ``f`` (at ``manifest``), column -> array, from its
    segments, each verified against its digest first (ShardError) and each dataset
    against its checksum (integrity.ChecksumError). A per-worker column that segments
    store with different widths (a run resumed on another number of workers) takes the
    widest, NaN where a worker did not exist."""
    segments, lengths = read_index(f)
    check_sizes(manifest, segments)
    pieces: dict[str, list[tuple[int, dict[str, np.ndarray]]]] = {p: [] for p in lengths}
    for segment in segments:
        path = segment_path(os.path.dirname(manifest), segment.name)
        if file_digest(path) != segment.digest:
            raise ShardError(f"{manifest}: its row segment {path} does not match the checksum "
                             "in its manifest: refused (changed or damaged after it was "
                             "written)")
        with h5py.File(path, "r") as seg:
            for table, start in segment.starts.items():
                group = seg[table]
                if int(group.attrs["start"]) != start:
                    raise ShardError(f"{manifest}: {path} starts {table} at row "
                                     f"{int(group.attrs['start'])}, the manifest says {start}")
                pieces[table].append((start, {name: integrity.read(group[name])
                                              for name in group
                                              if isinstance(group[name], h5py.Dataset)}))
    return {table: overlay(table, pieces[table], lengths[table], manifest)
            for table in lengths}


def overlay(table: str, pieces: list[tuple[int, dict[str, np.ndarray]]], length: int,
            manifest: str) -> dict[str, np.ndarray]:
    """Table ``table``'s first ``length`` rows from ``pieces`` ((start, columns), oldest
    first, a later one's rows replacing an earlier one's); ShardError if a row is in none."""
    if not pieces:
        if length:
            raise ShardError(f"{manifest}: no table rows hold {table}'s {length} rows")
        return {}
    columns = {}
    covered = np.zeros(length, bool)
    for start, arrays in pieces:
        covered[start:start + len(next(iter(arrays.values()), []))] = True
    if not covered.all():
        raise ShardError(f"{manifest}: its table rows lack rows of {table} (from row "
                         f"{int(np.argmin(covered))} of {length})")
    for name in pieces[-1][1]:
        parts = [(start, arrays[name]) for start, arrays in pieces if name in arrays]
        wide = max(p.shape[1:] for _, p in parts)
        dtype = parts[-1][1].dtype
        floating = np.issubdtype(dtype, np.floating)
        if len(parts) < len(pieces) and not floating:  # no value can stand for its rows
            raise ShardError(f"{manifest}: an older row segment of {table} lacks its column "
                             f"{name}")
        fill = np.nan if floating else 0
        out = np.full((length, *wide), fill, dtype)
        for start, part in parts:
            part = part[:max(0, length - start)]
            out[(slice(start, start + len(part)),
                 *(slice(0, n) for n in part.shape[1:]))] = part
        columns[name] = out
    return columns


def named(f: h5py.File) -> set[str]:
    """The segment names an open manifest names (none for a manifest without ``/rows``)."""
    return {s.name for s in read_index(f)[0]} if "rows" in f else set()


def remove_orphans(run_dir: str, names: set[str]) -> list[str]:
    """Delete the segments of ``run_dir`` that no manifest names (``names``); returns
    their paths."""
    removed = []
    for path in glob.glob(os.path.join(run_dir, "checkpoints", DIRECTORY, "*.h5")):
        if os.path.basename(path)[:-3] not in names:
            os.unlink(path)
            removed.append(path)
    return removed
