"""How exceptions are read (``mpi_gan/errors.py``): values the test writes itself."""
import errno
import gzip
import os
import pickle
import zlib

import pytest

from mpi_gan.train.launch import disk_full_message
from mpi_gan.errors import exception_chain, type_name
from mpi_gan.io.atomic import DiskFullError, disk_full_errors, no_space_errno


def test_the_chain_follows_causes_then_contexts_and_stops_at_a_cycle():
    root, middle, top = OSError("disk"), ValueError("while appending"), RuntimeError("run")
    middle.__context__ = root           # raised while handling root
    top.__cause__ = middle              # raise ... from middle
    top.__context__ = KeyError("hidden by the cause")
    assert list(exception_chain(top)) == [top, middle, root]
    root.__context__ = top              # a cycle: each exception once
    assert list(exception_chain(top)) == [top, middle, root]
    assert list(exception_chain(None)) == []


def test_type_names_are_those_a_reader_knows():
    assert type_name(OSError("x")) == "OSError"
    assert type_name(EOFError()) == "EOFError"
    with pytest.raises(zlib.error) as caught:
        zlib.decompress(b"not a deflate stream")
    assert type_name(caught.value) == "zlib.error"
    assert type_name(gzip.BadGzipFile("x")) == "gzip.BadGzipFile"
    with pytest.raises(pickle.UnpicklingError) as caught:
        pickle.loads(b"not a pickle")
    assert type(caught.value).__module__ == "_pickle"  # the C accelerator's
    assert type_name(caught.value) == "pickle.UnpicklingError"


def test_disk_full_is_recognised_whatever_raised_it():
    """h5py reports a failed write as RuntimeError or OSError with errno 28 only inside its
    message; a chain (raise ... from) hides it one level down; quota counts too."""
    h5 = RuntimeError("Can't write data (file write failed: time = Sat Dec  5 23:38:54 2026, "
                      "filename = 'run.h5', file descriptor = 18, errno = 28, error message "
                      "= 'No space left on device', buf = 0x55, total write size = 32168)")
    assert no_space_errno(h5) == errno.ENOSPC
    assert disk_full_message(h5).startswith("no space left on device (RuntimeError: Can't")
    try:
        try:
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/quota/run.h5")
        except OSError as exc:
            raise ValueError("while appending rows") from exc
    except ValueError as chained:
        assert no_space_errno(chained) == errno.EDQUOT
        assert disk_full_message(chained).startswith("disk quota exceeded")
    for other in (RuntimeError("Can't write data (errno = 5, Input/output error)"),
                  OSError(errno.EACCES, "Permission denied"), ValueError("errno = 280,")):
        assert no_space_errno(other) is None and disk_full_message(other) is None
    with pytest.raises(DiskFullError, match=r"no space left on device writing \S+run\.h5: "):
        with disk_full_errors("/tmp/run.h5"):
            raise h5
