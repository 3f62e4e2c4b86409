"""Atomic HDF5 writes: a temporary file in the same directory, fsync, rename.

A crash (or a full disk) while writing leaves at worst a stray temporary file;
the previous file of the same name is never damaged.
"""
from __future__ import annotations

import contextlib
import os
import shutil

import h5py


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_h5(path: str):
    """Yield an ``h5py.File`` open for writing that replaces ``path`` on success only."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            yield f
        with open(tmp, "rb+") as raw:
            os.fsync(raw.fileno())
        os.replace(tmp, path)
        _fsync_dir(directory)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_h5_update(path: str):
    """Yield ``path``'s copy open read-write (an ``h5py.File``); the copy replaces ``path``
    on success only, so a crash mid-update leaves the original intact."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+") as f:
            yield f
        with open(tmp, "rb+") as raw:
            os.fsync(raw.fileno())
        os.replace(tmp, path)
        _fsync_dir(directory)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
