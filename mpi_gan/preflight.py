"""A training command line checked before torch is imported.

Importing torch takes every rank a second or more of CPU (far more from a shared
filesystem, with hundreds of ranks starting at once): a mistyped flag or a configuration
that this number of ranks cannot run must not wait for it. The entry points call
``preflight`` first: it reads the command line and checks the configuration for the world
size, reading nothing else (no file, no dataset, no checkpoint: those are checked by the
agreed set-up that follows, ``train/launch.py``). Imports only the configurations, the
standard library, numpy and mpi4py.
"""
from __future__ import annotations

import sys

from .algorithms import REGISTRY
from .comm.agreement import lowest_failing_rank
from .errors import EXIT_USAGE, ConfigError, error_line


def preflight(algorithm: str, argv: list[str] | None = None) -> None:
    """Read and check ``algorithm``'s command line (``sys.argv[1:]`` by default) on every
    rank of ``MPI.COMM_WORLD``. ``--help`` ends every rank with status 0 (rank 0 prints
    it); a bad flag ends every rank with status 2, rank 0 printing the one error line
    (every rank reads the same command line). A configuration that ``validate`` refuses
    for this world size on any rank (a check may read the rank's environment: the ULFM
    flag) ends every rank with status 2, the lowest refusing rank printing its line: the
    ranks agree on it in one reduction, polled with sleeps. Anything else a check raises
    is left to the agreed set-up, which runs the checks again."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    entry = REGISTRY[algorithm]
    cfg = entry.parser()(sys.argv[1:] if argv is None else argv, quiet=rank != 0)
    refused = None
    try:
        entry.validator()(cfg, size)
    except ConfigError as exc:
        refused = str(exc)
    except Exception:  # noqa: BLE001 - reported, with its traceback, by the agreed set-up
        pass
    first = lowest_failing_rank(comm, refused is not None, pause=0.001)
    if first is not None:
        if first == rank:
            print(error_line(refused), file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USAGE)
