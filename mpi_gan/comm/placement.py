"""Where each rank runs: its host, process id, device and MPI library, gathered on rank 0
when a job starts and written to the run file as ``/ranks`` (docs/hdf5.md), so that a
multi-node run says which rank ran where.

Every rank sends one fixed-size record (``RECORD_BYTES``: the four fields, UTF-8,
tab-separated, zero-padded) in one gather of the transport: no pickle.
"""
from __future__ import annotations

import os
import socket

import numpy as np
from mpi4py import MPI

FIELDS = ("host", "pid", "device", "mpi_library")
RECORD_BYTES = 512


def this_rank(device) -> dict[str, str]:
    """This process's fields: hostname, pid, ``device`` (as torch names it) and the first
    line of the MPI library's version string."""
    library = MPI.Get_library_version().splitlines()[0].strip()
    return {"host": socket.gethostname(), "pid": str(os.getpid()), "device": str(device),
            "mpi_library": library}


def encode(fields: dict[str, str]) -> np.ndarray:
    """uint8 (RECORD_BYTES,): the fields in ``FIELDS`` order, tab-separated, zero-padded
    (each cut so that the record fits)."""
    text = "\t".join(fields[name].replace("\t", " ")[:RECORD_BYTES // len(FIELDS) - 1]
                     for name in FIELDS).encode()[:RECORD_BYTES]
    record = np.zeros(RECORD_BYTES, dtype=np.uint8)
    record[:len(text)] = np.frombuffer(text, dtype=np.uint8)
    return record


def decode(records: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 (ranks, RECORD_BYTES) -> the run file's /ranks datasets: host, device,
    mpi_library as UTF-8 byte strings (ranks,), pid int64 (ranks,)."""
    rows = [bytes(r).rstrip(b"\0").decode(errors="replace").split("\t") for r in records]
    rows = [row + [""] * (len(FIELDS) - len(row)) for row in rows]
    columns = {name: [row[i] for row in rows] for i, name in enumerate(FIELDS)}
    out = {f"ranks/{name}": np.array([v.encode() for v in columns[name]])
           for name in FIELDS if name != "pid"}
    out["ranks/pid"] = np.array([int(v) if v.isdigit() else -1 for v in columns["pid"]],
                                dtype=np.int64)
    return out


def gather_placement(transport, device) -> dict[str, np.ndarray] | None:
    """Collective over the transport's ranks: on ``root`` 0 the /ranks datasets (one row
    per rank, in rank order), None elsewhere."""
    records = transport.gather(encode(this_rank(device)))
    return decode(records) if records is not None else None
