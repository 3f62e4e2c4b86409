"""The checkpoint a run resumes from, found by rank 0 and verified by every rank at once.

Rank 0 picks the checkpoint (``io.checkpoint.load_resume``: ``--resume``, its checks
against this run, every shard present with its size) and tells each rank where its own
state lies (``share_sources``: a broadcast of the manifest's path, a scatter of one row per
rank); every rank then verifies its own shard's digest, in parallel, so no rank reads the
whole checkpoint. If a shard fails, ``--resume auto`` and ``--resume DIR`` pass the
checkpoint over for the newest older one (as they pass over a damaged manifest); a
checkpoint named by ``--resume FILE`` is refused with one line from the rank that found the
damage. Collective over ``comm``; mpi4py buffers only (no pickle).
"""
from __future__ import annotations

import os
import sys

import numpy as np
from mpi4py import MPI

from ..comm.agreement import lowest_failing_rank
from ..errors import error_line
from ..io.checkpoint import AUTO, CheckpointError, StateSource, load_resume, shard_path
from ..io.shards import ShardRecord
from . import elastic
from .launch import SetupFailed, agree, best_effort

NONE = -1      # row: this rank has no state in the checkpoint
IN_FILE = -1   # row's size: the state is a group of the single file (formats 2 and 3)
COLUMNS = 5    # source rank, size, digest (2 int64), whole (1) or a new worker's copy (0)


def broadcast_text(comm: MPI.Comm, text: str, root: int) -> str:
    """Collective: ``root``'s ``text`` on every rank (its length, then its UTF-8 bytes)."""
    data = np.frombuffer(text.encode(), dtype=np.uint8) if comm.Get_rank() == root else None
    length = np.array([len(data) if data is not None else 0], dtype=np.int64)
    comm.Bcast([length, MPI.INT64_T], root=root)
    if data is None:
        data = np.empty(int(length[0]), dtype=np.uint8)
    else:
        data = data.copy()
    comm.Bcast([data, MPI.UINT8_T], root=root)
    return data.tobytes().decode()


def source_rows(ckpt, size: int, seed: int) -> np.ndarray:
    """int64 (size, ``COLUMNS``), one row per rank of this run: the rank whose state it
    loads (``NONE``), the shard's size in bytes (``IN_FILE``), its digest as two int64, and
    1 to load the whole state or 0 for a new worker's copy. On the checkpoint's world size
    each rank loads its own state; on another, ``elastic.sources`` decides."""
    rows = np.zeros((size, COLUMNS), dtype=np.int64)
    rows[:, 0] = NONE
    ranks = set(ckpt.ranks())
    if ckpt.world_size == size:
        plan = {rank: (rank, True) for rank in range(size) if rank in ranks}
    else:
        plan = {0: (0, True), **elastic.sources(seed, ckpt.iteration,
                                                [r for r in ranks if r != 0], size - 1)}
    for rank, (source, whole) in plan.items():
        record = ckpt.shards.get(source)
        rows[rank, :4] = record.to_array() if record is not None else [source, IN_FILE, 0, 0]
        rows[rank, 4] = int(whole)
    return rows


def share_sources(comm: MPI.Comm, ckpt) -> tuple[str, StateSource | None]:
    """Collective: (the checkpoint's path, where this rank's state lies) from rank 0's
    ``ckpt``; ("", None) on every rank for a fresh run, (path, None) on a rank the
    checkpoint holds no state of (a worker lost before it)."""
    rank, size = comm.Get_rank(), comm.Get_size()
    text = f"{ckpt.path}\n{ckpt.shard_directory}" if rank == 0 and ckpt is not None else ""
    path, _, directory = broadcast_text(comm, text, 0).partition("\n")
    if not path:
        return "", None
    rows = source_rows(ckpt, size, ckpt.config.seed) if rank == 0 else None
    row = np.empty(COLUMNS, dtype=np.int64)
    comm.Scatter([rows, MPI.INT64_T] if rows is not None else None, [row, MPI.INT64_T], root=0)
    record, whole = ShardRecord.from_array(row[:4]), bool(row[4])
    if record.rank == NONE:
        return path, None
    if record.nbytes == IN_FILE:
        return path, StateSource(path, f"state/rank_{record.rank}", None, whole)
    return path, StateSource(shard_path(path, directory, record.rank), "state", record, whole)


def resume_point(comm: MPI.Comm, cfg, reader, elastic: bool = False):
    """Collective: (rank 0's checkpoint to resume from or None, this rank's
    ``StateSource`` or None), every shard verified by its rank (module docstring);
    ``elastic``: the algorithm resumes on another world size (``train/elastic.py``)."""
    rank, size = comm.Get_rank(), comm.Get_size()
    refused: dict[str, str] = {}
    passes_over = cfg.resume == AUTO or bool(cfg.resume and os.path.isdir(cfg.resume))
    while True:
        ckpt = agree(comm, lambda: load_resume(cfg, size, reader, refused, elastic)
                     if rank == 0 else None)
        path, source = share_sources(comm, ckpt)
        problem = ""
        if source is not None:
            try:
                source.verify(path)
            except CheckpointError as exc:
                problem = str(exc)
        first = lowest_failing_rank(comm, bool(problem))
        if first is None:
            return ckpt, source
        reason = broadcast_text(comm, problem, first)
        if not passes_over:
            if rank == first:
                best_effort(print, error_line(reason), file=sys.stderr, flush=True)
            raise SetupFailed()
        refused[path] = reason
