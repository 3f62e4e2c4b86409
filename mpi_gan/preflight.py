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
from .errors import EXIT_USAGE, ConfigError, error_line


def preflight(algorithm: str, argv: list[str] | None = None) -> None:
    """Read and check ``algorithm``'s command line (``sys.argv[1:]`` by default) on every
    rank of ``MPI.COMM_WORLD``. ``--help`` ends every rank with status 0 (rank 0 prints
    it); a bad flag or a configuration that ``validate`` refuses for this world size ends
    every rank with status 2, rank 0 printing the one error line. The checks are pure
    functions of the command line and the world size, so every rank reaches the same
    verdict without a message. Anything else a check raises is left to the agreed set-up,
    which runs them again."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    entry = REGISTRY[algorithm]
    cfg = entry.parser()(sys.argv[1:] if argv is None else argv, quiet=rank != 0)
    try:
        entry.validator()(cfg, size)
    except ConfigError as exc:
        if rank == 0:
            print(error_line(str(exc)), file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USAGE) from None
    except Exception:  # noqa: BLE001 - reported, with its traceback, by the agreed set-up
        return
