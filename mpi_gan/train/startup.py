"""The set-up every entry point shares, each step agreed on by every rank (``launch.agree``)."""
from __future__ import annotations

import contextlib
import os
import socket
import time

from mpi4py import MPI

from ..data import prepare
from ..io import lock as run_lock
from .launch import agree, local_rank, prepare_out, setup_logging
from .resume import resume_point


PROBE = ".shared-probe"  # rank 0's file in <out>/logs that every rank must see
PROBE_SECONDS = 30.0  # how long a rank looks for it (an NFS client caches a missing name)


def probe_path(out: str) -> str:
    return os.path.join(out, "logs", PROBE)


def write_probe(out: str) -> None:
    """Rank 0: a file in ``out`` that every rank must then see."""
    with open(probe_path(out), "w") as f:
        f.write(f"{socket.gethostname()} {os.getpid()}\n")


def check_probe(out: str, rank: int, seconds: float = PROBE_SECONDS) -> None:
    """OSError unless this rank sees rank 0's probe in ``out`` within ``seconds``: every rank
    writes its shard of each checkpoint there, and a resume needs all of them in one place."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(probe_path(out)):
        if time.monotonic() > deadline:
            raise OSError(f"--out {out!r} is not one directory that every rank sees: rank "
                          f"{rank} on {socket.gethostname()} does not see the files rank 0 "
                          "writes there (a node-local path such as $TMPDIR?); each rank "
                          "writes its own checkpoint shards there, so put --out on a file "
                          "system that every node mounts (docs/hpc.md, 'Many nodes')")
        time.sleep(0.5)


def remove_probe(out: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(probe_path(out))


def start_run(comm: MPI.Comm, cfg, validate, reader, elastic: bool = False):
    """The set-up shared by the entry points, each step agreed on by every rank.

    Validates ``cfg`` for the world size (``validate(cfg, size)``), prepares
    ``--out``, lets rank 0 take its lock (``io/lock.py``: one job per run directory, held
    until ``io.lock.release_all``) before anything is written there, opens this rank's log,
    lets rank 0 find and check the checkpoint to resume (``reader`` parses one) and every
    rank verify its own state in it (``train/resume.py``), and converts the dataset into its
    HDF5 cache once per node. ``elastic``: the algorithm resumes on another world size
    (``train/elastic.py``). Returns (logger, checkpoint or None on other ranks, where this
    rank's state lies or None, local rank).
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    agree(comm, lambda: validate(cfg, size))
    log_path = agree(comm, lambda: prepare_out(cfg.out, rank))
    said: list[str] = []
    agree(comm, lambda: run_lock.take(cfg.out, said.append) if rank == 0 else None)
    log = setup_logging(log_path, rank)
    for line in said:
        log.info("%s", line)
    if comm.Get_size() > 1:  # every rank sees --out as rank 0 does
        agree(comm, lambda: write_probe(cfg.out) if rank == 0 else None)
        agree(comm, lambda: check_probe(cfg.out, rank) if rank != 0 else None)
        agree(comm, lambda: remove_probe(cfg.out) if rank == 0 else None)
    ckpt, source = resume_point(comm, cfg, reader, elastic)
    for reason in getattr(ckpt, "passed_over", ()):
        log.warning("%s; resuming from the newest checkpoint that verifies, %s", reason,
                    ckpt.path)
    local = local_rank(comm)
    agree(comm, lambda: prepare(cfg, log.info) if local == 0 else None)
    return log, ckpt, source, local
