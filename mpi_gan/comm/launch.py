"""Process-level plumbing shared by the entry points: errors, abort, devices, logs.

Failure policy:
* set-up errors (bad config, missing data, bad checkpoint, unwritable --out) are
  agreed on by every rank with one Allreduce; the lowest failing rank prints one
  ``mpi_gan: error: ...`` line and every rank exits with status 2;
* any exception after set-up prints its traceback and calls ``MPI_Abort`` so no
  rank is left waiting on a dead peer.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import struct
import sys
import termios
import time
import traceback

import numpy as np
import torch
from mpi4py import MPI

from ..config import ConfigError
from ..data import DataError, prepare
from ..io.atomic import DiskFullError
from ..io.checkpoint import CheckpointError, load_resume
from .ulfm import ServerLost

EXIT_USAGE = 2
SETUP_ERRORS = (ConfigError, DataError, CheckpointError, OSError)


class SetupFailed(SystemExit):
    """Raised on every rank when any rank failed a set-up step (exit status 2)."""

    def __init__(self):
        super().__init__(EXIT_USAGE)


def agree(comm: MPI.Comm, step):
    """Run ``step()`` on every rank; if it raised a set-up error anywhere, all ranks stop.

    Returns ``step()``'s result. The lowest failing rank prints the message.
    """
    error = None
    try:
        result = step()
    except SETUP_ERRORS as exc:
        error, result = exc, None
    rank, size = comm.Get_rank(), comm.Get_size()
    first = np.array([rank if error is not None else size], dtype=np.int64)
    # wait politely: a step may take one rank minutes (a dataset conversion, the score
    # classifier's training) and busy-polling ranks would take the cores it needs
    request = comm.Iallreduce(MPI.IN_PLACE, [first, MPI.INT64_T], op=MPI.MIN)
    while not request.Test():
        time.sleep(0.01)
    if int(first[0]) < size:
        if int(first[0]) == rank:
            print(f"mpi_gan: error: {error}", file=sys.stderr, flush=True)
        raise SetupFailed()
    return result


# errors after set-up whose message says it all (a full disk, a dead server): one ``mpi_gan: error:``
# line, no traceback
CLEAR_ERRORS = (DiskFullError, ServerLost)


@contextlib.contextmanager
def abort_on_exception(comm: MPI.Comm):
    """Turn any exception on this rank into MPI_Abort of the whole job; never returns
    normally after one (if MPI_Abort returns, the process exits)."""
    try:
        yield
    except SystemExit as exc:
        if exc.code not in (0, None):
            _abort(comm, f"exited with status {exc.code}", int(exc.code) if isinstance(
                exc.code, int) else 1)
        raise
    except CLEAR_ERRORS as exc:
        _abort(comm, str(exc), 1, clear=True)
    except BaseException as exc:  # noqa: BLE001 - every failure must end the job
        _abort(comm, "".join(traceback.format_exception(exc)), 1)


# Before MPI_Abort a failing rank waits (at most this long) until the launcher has
# read its stderr, then a little more for the launcher to pass it on, so the reason
# reaches mpiexec's stderr before the job is killed. The rank's log file has the
# message in any case: it is written and flushed first.
STDERR_DRAIN_SECONDS = 10.0
ABORT_GRACE_SECONDS = 0.3


def _wait_stderr_read(timeout: float) -> None:
    """If stderr is a pipe (to the launcher), return once nothing written to it is left
    unread, or after ``timeout`` seconds; at once for a terminal or a file."""
    try:
        if not stat.S_ISFIFO(os.fstat(2).st_mode):
            return
    except OSError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if struct.unpack("i", fcntl.ioctl(2, termios.FIONREAD, b"\0" * 4))[0] == 0:
                return
        except OSError:
            return
        time.sleep(0.01)


def _abort(comm: MPI.Comm, text: str, code: int, clear: bool = False) -> None:
    """Log ``text``, print it (``clear``: as one ``mpi_gan: error:`` line, else under a
    header naming the rank), let the launcher read it, then end the whole job."""
    rank = comm.Get_rank()
    logger = logging.getLogger("mpi_gan")
    logger.error("rank %d aborting the job: %s", rank, text)
    for handler in logger.handlers:
        handler.flush()
    logs = [h.baseFilename for h in logger.handlers if isinstance(h, logging.FileHandler)]
    where = f" (also in {logs[0]})" if logs else ""
    if clear:
        print(f"mpi_gan: error: {text}", file=sys.stderr, flush=True)
    else:
        print(f"mpi_gan: rank {rank} failed, aborting all ranks{where}:\n{text}",
              file=sys.stderr, flush=True)
    _wait_stderr_read(STDERR_DRAIN_SECONDS)
    time.sleep(ABORT_GRACE_SECONDS)
    comm.Abort(code)
    os._exit(code)  # MPI_Abort may return (a singleton without a launcher): never go on


def local_rank(comm: MPI.Comm) -> int:
    """Rank of this process among the processes of its node."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_rank()
    finally:
        node.Free()


def select_device(choice: str, local: int) -> torch.device:
    """``auto``: CUDA device ``local % count`` if CUDA is available, else CPU."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but torch sees no CUDA device "
                          f"(torch {torch.__version__}, CUDA build: {torch.version.cuda})")
    index = local % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def prepare_out(out: str, rank: int) -> str:
    """Create ``out``, ``out/logs`` and ``out/checkpoints``; check they are writable.

    Returns this rank's log file path. Raises OSError with a clear message.
    """
    try:
        for sub in ("logs", "checkpoints"):
            os.makedirs(os.path.join(out, sub), exist_ok=True)
        probe = os.path.join(out, "logs", f".write-test-{rank}")
        with open(probe, "w") as f:
            f.write("ok")
        os.unlink(probe)
    except OSError as exc:
        raise OSError(f"--out {out!r} is not a writable directory: {exc.strerror or exc}") from exc
    return os.path.join(out, "logs", f"rank{rank}.log")


def setup_logging(log_path: str, rank: int) -> logging.Logger:
    """Log to this rank's file; rank 0 also prints progress to stdout."""
    logger = logging.getLogger("mpi_gan")
    logger.handlers.clear()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.FileHandler(log_path, mode="a")
    handler.setFormatter(logging.Formatter(f"%(asctime)s rank{rank} %(levelname)s %(message)s"))
    logger.addHandler(handler)
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(console)
    return logger


def start_run(comm: MPI.Comm, cfg, validate, reader):
    """The set-up shared by the entry points, each step agreed on by every rank.

    Validates ``cfg`` for the world size (``validate(cfg, size)``), prepares
    ``--out`` and this rank's log, lets rank 0 find and check the checkpoint to
    resume (``reader`` parses one), and converts the dataset into its HDF5 cache
    once per node. Returns (logger, checkpoint or None on other ranks, local rank).
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    agree(comm, lambda: validate(cfg, size))
    log = setup_logging(agree(comm, lambda: prepare_out(cfg.out, rank)), rank)
    ckpt = agree(comm, lambda: load_resume(cfg, size, reader) if rank == 0 else None)
    local = local_rank(comm)
    agree(comm, lambda: prepare(cfg, log.info) if local == 0 else None)
    return log, ckpt, local
