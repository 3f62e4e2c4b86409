"""Atomic HDF5 writes: a temporary file in the same directory, fsync, rename.

A crash (or a full disk) while writing leaves at worst a stray temporary file, which the
next write of the same file removes once its writer is gone (``remove_dead_temporaries``);
the previous file of the same name is never damaged.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil


from ..errors import exception_chain
from .integrity import open_for_writing
from .lock import parse_host, process_alive, same_host, this_host

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No space (or quota) left while writing a file; its message names the file, the
    space it needs and the space free."""


def no_space_errno(exc: BaseException | None) -> int | None:
    """ENOSPC or EDQUOT when ``exc``, or an exception in its chain (cause or context), means
    a full disk or quota: an OSError with that errno, or h5py's errors (RuntimeError,
    OSError without errno) whose message carries it (``errno = 28``); else None."""
    for cause in exception_chain(exc):
        if isinstance(cause, OSError) and cause.errno in NO_SPACE:
            return cause.errno
        text = str(cause)
        for code in NO_SPACE:
            if f"errno = {code}," in text or os.strerror(code) in text:
                return code
    return None


def _no_space(code: int, path: str, written: str, size_hint: int) -> DiskFullError:
    """A full disk or quota (errno ``code``) as a DiskFullError naming ``path``; the space needed
    is estimated as the largest of ``written``'s and ``path``'s sizes and ``size_hint``."""
    sizes = [size_hint]
    for candidate in (written, path):
        with contextlib.suppress(OSError):
            sizes.append(os.stat(candidate).st_size)
    directory = os.path.dirname(os.path.abspath(path))
    free = shutil.disk_usage(directory).free if os.path.isdir(directory) else 0
    if written != path:  # a temporary file, removed next: its space is free again
        with contextlib.suppress(OSError):
            free += os.stat(written).st_blocks * 512
    what = "no space left on device" if code == errno.ENOSPC else "disk quota exceeded"
    error = DiskFullError(f"{what} writing {path}: it needs about {max(sizes) / 1e6:.1f} MB, "
                          f"{free / 1e6:.1f} MB free in {directory}")
    error.errno = code
    return error


@contextlib.contextmanager
def disk_full_errors(path: str, written: str | None = None, size_hint: int = 0):
    """Turn a full disk or quota while writing ``path`` (through the file ``written``,
    default ``path``) into a DiskFullError with a one-line message, whatever raised it
    (``no_space_errno``: h5py raises RuntimeError for a failed write)."""
    try:
        yield
    except Exception as exc:
        code = None if isinstance(exc, DiskFullError) else no_space_errno(exc)
        if code is None:
            raise
        raise _no_space(code, path, written or path, size_hint) from exc


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(path: str) -> str:
    """The temporary file beside ``path`` that this process writes:
    ``<path>.tmp-<hostname>~<machine id>-<pid>`` (``lock.this_host``)."""
    return f"{path}.tmp-{this_host()}-{os.getpid()}"


def remove_dead_temporaries(path: str) -> list[str]:
    """Delete the temporary files of ``path`` (``temporary_name``) whose writer ran on this
    host and is gone (killed mid-write: SIGKILL, a second Ctrl-C, a node's OOM killer);
    those of live processes or other hosts (another hostname, or the same hostname with
    another machine id: a cloned node, a container) stay. Names of older versions
    (``.tmp-<hostname>-<pid>``, ``.tmp-<pid>``) count as this host's when the hostname
    matches. Returns the paths removed."""
    removed = []
    for candidate in glob.glob(glob.escape(path) + ".tmp-*"):
        owner = candidate[len(path) + len(".tmp-"):]
        where, _, pid = owner.rpartition("-")
        here = not where or same_host(*parse_host(where))
        if not pid.isdigit() or not here or process_alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(candidate)
            removed.append(candidate)
    return removed


@contextlib.contextmanager
def replacing(path: str, size_hint: int):
    """Yield a temporary path beside ``path``; on success fsync it and rename it over
    ``path``; remove it in any case. A full disk raises DiskFullError (the previous
    ``path`` is untouched)."""
    directory = os.path.dirname(os.path.abspath(path))
    remove_dead_temporaries(path)
    tmp = temporary_name(path)
    try:
        with disk_full_errors(path, tmp, size_hint):
            yield tmp
            with open(tmp, "rb+") as raw:
                os.fsync(raw.fileno())
            os.replace(tmp, path)
            _fsync_dir(directory)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_h5(path: str, size_hint: int = 0):
    """Yield an ``h5py.File`` open for writing that replaces ``path`` on success only, in
    the file format whose metadata carry checksums (``integrity.LIBVER``).

    A full disk raises DiskFullError (``size_hint``: the bytes the file is expected to
    take, for its message)."""
    with replacing(path, size_hint) as tmp, open_for_writing(tmp, "w") as f:
        yield f


@contextlib.contextmanager
def atomic_h5_update(path: str):
    """Yield ``path``'s copy open read-write (an ``h5py.File``); the copy replaces ``path``
    on success only, so a crash mid-update leaves the original intact."""
    with replacing(path, os.path.getsize(path)) as tmp:
        shutil.copyfile(path, tmp)
        with open_for_writing(tmp, "r+") as f:
            yield f
