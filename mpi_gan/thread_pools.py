"""Thread pools sized from ``--threads`` before any library starts one.

OpenMP (torch's intra-op pool), MKL and OpenBLAS read their sizes from the
environment when they start, which happens while torch and numpy are imported:
too late for ``torch.set_num_threads``. The entry points call ``limit_threads``
first, before importing anything else of the package. Standard library only.
"""
from __future__ import annotations

import os
import sys

POOL_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
DEFAULT_THREADS = 1  # the configs' --threads default: one thread per rank


def threads_from_argv(argv: list[str]) -> int | None:
    """The value of ``--threads N`` / ``--threads=N`` in ``argv`` (the last one), if it is a
    positive integer; None otherwise (the parser reports a bad value later)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
    try:
        return int(value) if value is not None and int(value) > 0 else None
    except ValueError:
        return None


def limit_threads(argv: list[str] | None = None, environ=os.environ) -> int:
    """Set every pool variable to ``--threads`` (default 1); a variable the user set
    stays unless ``--threads`` is given. Returns the thread count asked for."""
    given = threads_from_argv(sys.argv[1:] if argv is None else argv)
    threads = given or DEFAULT_THREADS
    for name in POOL_VARIABLES:
        if given is not None or name not in environ:
            environ[name] = str(threads)
    return threads
