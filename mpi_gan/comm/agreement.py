"""How every rank learns that some rank failed a step: one reduction of who failed, waited
for politely. mpi4py and numpy only (the command-line check runs before torch)."""
from __future__ import annotations

import time

import numpy as np
from mpi4py import MPI


def lowest_failing_rank(comm: MPI.Comm, failed: bool, pause: float = 0.01) -> int | None:
    """Collective: the lowest rank of ``comm`` that passed ``failed=True``, None if none did.
    Waits polling with ``pause``-second sleeps: a step may take one rank minutes (a dataset
    conversion, the score classifier's training) and busy-polling ranks would take the
    cores it needs."""
    size = comm.Get_size()
    first = np.array([comm.Get_rank() if failed else size], dtype=np.int64)
    request = comm.Iallreduce(MPI.IN_PLACE, [first, MPI.INT64_T], op=MPI.MIN)
    while not request.Test():
        time.sleep(pause)
    return int(first[0]) if first[0] < size else None
