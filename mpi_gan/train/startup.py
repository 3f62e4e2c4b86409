"""The set-up every entry point shares, each step agreed on by every rank (``launch.agree``)."""
from __future__ import annotations

from mpi4py import MPI

from ..data import prepare
from ..io import lock as run_lock
from .launch import agree, local_rank, prepare_out, setup_logging
from .resume import resume_point


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
    ckpt, source = resume_point(comm, cfg, reader, elastic)
    for reason in getattr(ckpt, "passed_over", ()):
        log.warning("%s; resuming from the newest checkpoint that verifies, %s", reason,
                    ckpt.path)
    local = local_rank(comm)
    agree(comm, lambda: prepare(cfg, log.info) if local == 0 else None)
    return log, ckpt, source, local
