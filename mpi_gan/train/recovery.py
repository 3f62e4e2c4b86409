"""Going on after a worker dies (``--fault-tolerant``, ULFM; ``comm/ulfm.py``).

Every rank keeps a copy of its state (its role's state and its RNG) at the start of its
last two iterations (``Snapshots``). When an MPI operation fails because a peer died, the
rank revokes the transport's communicator, so that every survivor's pending operation
fails as well, and the survivors shrink it to themselves (``recover``). They agree on the
earliest iteration any of them was in (one Allreduce MIN): they are never more than one
apart, because the server steps G only once every worker's feedback of the iteration has
arrived. Each survivor restores its state at the start of that iteration, the roles plan
over the survivors, and the interrupted iteration runs again among them: the result is
the run in which the dead workers left at that iteration (the single-process reference
with ``lost`` computes it; tests/cluster/test_fault_tolerance.py compares the two).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from mpi4py import MPI

from ..comm.transport import Transport
from ..comm.ulfm import ServerLost, is_peer_failure
from ..io.runlog import Metrics


class Snapshots:
    """Copies of one rank's state at the start of its last ``keep`` iterations."""

    def __init__(self, keep: int = 2):
        self.keep = keep
        self._kept: dict[int, list[tuple[str, torch.Tensor]]] = {}

    def take(self, iteration: int, entries: list[tuple[str, torch.Tensor]]) -> None:
        """Copy ``entries`` (named tensors) as the state at the start of ``iteration``."""
        self._kept[iteration] = [(name, t.detach().clone()) for name, t in entries]
        for old in sorted(self._kept)[:-self.keep]:
            del self._kept[old]

    def restore(self, iteration: int) -> dict[str, torch.Tensor]:
        """The state kept for the start of ``iteration`` (copies); later ones are dropped."""
        if iteration not in self._kept:
            raise RuntimeError(f"fault tolerance: no state kept for iteration {iteration} "
                               f"(kept: {sorted(self._kept)})")
        for later in [i for i in self._kept if i > iteration]:
            del self._kept[later]
        return {name: t.clone() for name, t in self._kept[iteration]}

    def __contains__(self, iteration: int) -> bool:
        return iteration in self._kept


@dataclass
class Failure:
    """What the survivors agreed on after a failure."""

    lost: list[int]       # world ranks that died (all of them since the last recovery)
    iteration: int        # 0-based iteration every survivor runs again from
    detected: float       # Unix time at which the first survivor saw the failure
    seconds: float        # this rank's seconds from its detection to the agreement


def recover(transport: Transport, current: int, detected: float) -> Failure:
    """Collective over the survivors, each called with the iteration it was in
    (``current``) and the Unix time it saw the failure: shrink the transport to them and
    agree on the iteration to run again. A failure during the recovery starts it again."""
    tic, lost = time.perf_counter(), []
    while True:
        try:
            lost += transport.shrink()
            agreed = np.array([current, detected], dtype=np.float64)
            transport.comm.Allreduce(MPI.IN_PLACE, [agreed, MPI.DOUBLE], op=MPI.MIN)
            break
        except MPI.Exception as exc:
            if not is_peer_failure(exc):
                raise
    if 0 in lost:
        raise ServerLost("the server (rank 0) died; the workers cannot go on without it: "
                         "resume from the newest checkpoint in --out")
    return Failure(sorted(lost), int(agreed[0]), float(agreed[1]), time.perf_counter() - tic)


def faults_table() -> Metrics:
    """Rank 0's record of lost workers, one row per dead rank: iteration (0-based, run
    again by the survivors from there), rank (world rank), detected_unix (Unix time the
    first survivor saw the failure), silent_seconds (seconds from the last message rank 0
    had received from that rank to the detection: an upper bound of the time to detect,
    NaN if it had sent nothing), recovery_seconds (rank 0's seconds from detection to the
    agreement), workers_left."""
    return Metrics({"iteration": (np.int64, ()), "rank": (np.int64, ()),
                    "detected_unix": (np.float64, ()), "silent_seconds": (np.float64, ()),
                    "recovery_seconds": (np.float64, ()), "workers_left": (np.int64, ())})


def truncate_after(tables: dict[str, Metrics], iteration: int) -> None:
    """Drop the rows of every table (with an ``iteration`` column) past ``iteration``:
    the steps the survivors run again."""
    for table in tables.values():
        if "iteration" in table.columns:
            iterations = table.rows["iteration"]
            table.truncate(sum(1 for i in iterations if i <= iteration))
