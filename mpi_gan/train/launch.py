"""Process-level plumbing shared by the entry points: errors, abort, devices, logs.

Failure policy:
* set-up steps (config, --out, checkpoint, dataset cache, data, scorer) are agreed
  on by every rank with one Allreduce (``agree``): if any rank raised anything, the
  lowest failing rank prints one ``mpi_gan: error: ...`` line (an unexpected
  exception's traceback goes to its log) and every rank exits with status 2;
* any other exception, in set-up between the agreed steps or in training, calls
  ``MPI_Abort`` (``abort_on_exception``) so no rank is left waiting on a dead peer:
  a full disk or a dead server as one ``mpi_gan: error:`` line, anything else with its
  traceback; every step before ``MPI_Abort`` is best effort.
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

import torch
from mpi4py import MPI

from ..data import DataError
from ..errors import EXIT_USAGE, ConfigError, error_line, exception_chain, type_name
from ..io.atomic import DiskFullError, no_space_errno
from ..io import lock as run_lock
from ..io.checkpoint import CheckpointError
from ..io.lock import LockError, LockLost
from ..comm.agreement import lowest_failing_rank
from ..comm.ulfm import ServerLost

SETUP_ERRORS = (ConfigError, DataError, CheckpointError, LockError, OSError)


class SetupFailed(SystemExit):
    """Raised on every rank when any rank failed a set-up step (exit status 2)."""

    def __init__(self):
        super().__init__(EXIT_USAGE)


def agree(comm: MPI.Comm, step):
    """Run ``step()`` on every rank; if it raised anywhere, all ranks stop (``SetupFailed``).

    Returns ``step()``'s result. The lowest failing rank prints the one ``mpi_gan: error:``
    line: the message of an expected set-up error (``SETUP_ERRORS``), else the exception's
    type and message with its traceback in the rank's log (on stderr before the log
    exists). Any exception counts: one that escaped here would leave the other ranks
    waiting in this Iallreduce until the job's time limit.
    """
    error = None
    try:
        result = step()
    except SETUP_ERRORS as exc:
        error, result = describe_error(exc), None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - every failure must be agreed on
        error, result = unexpected_error(comm.Get_rank(), exc), None
    first = lowest_failing_rank(comm, error is not None)
    if first is not None:
        if first == comm.Get_rank():
            best_effort(print, error_line(error), file=sys.stderr, flush=True)
        raise SetupFailed()
    return result


def describe_error(exc: BaseException) -> str:
    """An expected error's one-line message; a full disk (whatever raised it) says so."""
    return disk_full_message(exc) or str(exc)


def unexpected_error(rank: int, exc: BaseException) -> str:
    """The one-line message of an exception no set-up step expects; its traceback goes to
    this rank's log, or to stderr while there is none (best effort: a full disk too)."""
    if disk_full_message(exc):
        return disk_full_message(exc)
    text = "".join(traceback.format_exception(exc))
    logs = log_files()
    if logs:
        best_effort(log_to_files, logging.ERROR, f"rank {rank} failed in set-up:\n{text}")
        where = f"traceback in {logs[0]}"
    else:
        best_effort(print, text, file=sys.stderr, end="", flush=True)
        where = "traceback above"
    return f"rank {rank}: {type_name(exc)}: {exc} ({where})"


def disk_full_message(exc: BaseException) -> str | None:
    """The one disk-full line if ``exc`` or an exception in its chain means no space or
    quota left (``io.atomic.no_space_errno``), else None."""
    for cause in exception_chain(exc):  # one that names the file and sizes
        if isinstance(cause, DiskFullError):
            return str(cause)
    code = no_space_errno(exc)
    if code is None:
        return None
    where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
    return (f"{os.strerror(code).lower()}{where} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}): free some space and "
            "resume with --resume auto")


def best_effort(function, *args, **kwargs) -> None:
    """Call ``function``; ignore anything it raises (the abort and error paths must go
    on when a disk is full or a pipe is closed)."""
    try:
        function(*args, **kwargs)
    except BaseException:  # noqa: BLE001
        pass


def log_files() -> list[str]:
    """The files the ``mpi_gan`` logger writes to."""
    return [h.baseFilename for h in logging.getLogger("mpi_gan").handlers
            if isinstance(h, logging.FileHandler)]


def log_to_files(level: int, text: str) -> None:
    """Write ``text`` to the ``mpi_gan`` logger's files only (not to the console), flushed,
    each file on its own (best effort)."""
    logger = logging.getLogger("mpi_gan")
    record = logger.makeRecord(logger.name, level, __file__, 0, text, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            best_effort(handler.handle, record)
            best_effort(handler.flush)


def flush_logs() -> None:
    """Flush every handler of the ``mpi_gan`` logger, each on its own (best effort)."""
    for handler in logging.getLogger("mpi_gan").handlers:
        best_effort(handler.flush)


class ClearError(RuntimeError):
    """An error after set-up whose message says it all (numbers gone non-finite, ...)."""


# errors after set-up whose message says it all (a full disk, a dead server): one ``mpi_gan: error:``
# line, no traceback
CLEAR_ERRORS = (DiskFullError, ServerLost, ClearError, LockLost)


class FailedElsewhere(RuntimeError):
    """A rank failed a collective step that several may fail at once (a full disk under
    every rank's shard): the lowest failing rank ends the job with its own message, and
    this rank, which failed too (its error is the cause) or not, waits to be ended with it
    (``abort_on_exception``), saying nothing on the console."""

    def __init__(self, rank: int):
        super().__init__(f"rank {rank} failed the same step and ends the job")
        self.rank = rank


# how long a rank that failed with others waits for the lowest of them to end the job
# before it ends the job itself (that rank is stuck: it had 10 s to pass on its message)
PARK_SECONDS = 120.0


@contextlib.contextmanager
def abort_on_exception(comm: MPI.Comm):
    """Turn any exception on this rank into MPI_Abort of the whole job; never returns
    normally after one (if MPI_Abort returns, the process exits). ``SetupFailed`` passes:
    every rank raised it together (``agree``)."""
    try:
        yield
    except SetupFailed:
        run_lock.release_all()
        raise
    except SystemExit as exc:
        if exc.code not in (0, None):
            _abort(comm, f"exited with status {exc.code}", int(exc.code) if isinstance(
                exc.code, int) else 1)
        raise
    except FailedElsewhere as exc:
        best_effort(log_to_files, logging.ERROR, f"{exc}" + (
            f"; this rank failed too: {exc.__cause__}" if exc.__cause__ else ""))
        best_effort(flush_logs)
        best_effort(time.sleep, PARK_SECONDS)
        _abort(comm, f"{exc}, but has not after {PARK_SECONDS:.0f} s: {exc.__cause__}", 1,
               clear=True)
    except CLEAR_ERRORS as exc:
        _abort(comm, describe_error(exc), 1, clear=True)
    except KeyboardInterrupt:  # Ctrl-C before the stop handlers are installed (set-up)
        _abort(comm, "interrupted (SIGINT) during set-up: nothing to keep, start it again",
               130, clear=True)
    except BaseException as exc:  # noqa: BLE001 - every failure must end the job
        full = disk_full_message(exc)
        if full:
            _abort(comm, full, 1, clear=True)
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
    header naming the rank), let the launcher read it, then end the whole job. Every step
    before MPI_Abort is best effort: a full disk or a closed pipe never keeps it away."""
    rank = comm.Get_rank()
    # to the log files only: the console gets the one line below
    best_effort(log_to_files, logging.ERROR, f"rank {rank} aborting the job: {text}")
    best_effort(flush_logs)
    logs = log_files()
    where = f" (also in {logs[0]})" if logs else ""
    if clear:
        best_effort(print, error_line(text), file=sys.stderr, flush=True)
    else:
        best_effort(print, f"mpi_gan: rank {rank} failed, aborting all ranks{where}:\n{text}",
                    file=sys.stderr, flush=True)
    run_lock.release_all()
    best_effort(_wait_stderr_read, STDERR_DRAIN_SECONDS)
    best_effort(time.sleep, ABORT_GRACE_SECONDS)
    try:
        comm.Abort(code)
    finally:
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


class QuietErrors:
    """A logging handler that drops a record it cannot write (a full disk, a closed pipe)
    instead of printing logging's traceback of it on stderr: logs are best effort, and a
    full disk ends the run with one clear line at its next checkpoint or run-file write.
    ``failures`` counts the dropped records."""
    failures = 0

    def handleError(self, record):  # noqa: N802 - logging's name
        self.failures += 1


class QuietFileHandler(QuietErrors, logging.FileHandler):
    pass


class QuietStreamHandler(QuietErrors, logging.StreamHandler):
    pass


def setup_logging(log_path: str, rank: int) -> logging.Logger:
    """Log to this rank's file; rank 0 also prints progress to stdout."""
    logger = logging.getLogger("mpi_gan")
    logger.handlers.clear()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = QuietFileHandler(log_path, mode="a")
    handler.setFormatter(logging.Formatter(f"%(asctime)s rank{rank} %(levelname)s %(message)s"))
    logger.addHandler(handler)
    if rank == 0:
        console = QuietStreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(console)
    return logger
