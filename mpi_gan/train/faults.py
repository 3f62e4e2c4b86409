"""Fault injection for the tests of the failure paths: ``MPI_GAN_FAULT``.

``MPI_GAN_FAULT=rank:iteration[:how][,...]`` (one fault per rank; several ranks separated
by commas). ``inject`` wraps a trainer's algorithm, the roles it builds and its checkpoint
writer when the variable names this rank; the training loops know nothing of it.

- ``raise`` (default): an exception at the start of that iteration's step (it must end
  the job);
- ``kill``: the rank SIGKILLs itself at the start of that iteration's step (a dead worker:
  ``--fault-tolerant`` goes on without it);
- ``kill-in-checkpoint``: the rank SIGKILLs itself while writing its shard of that
  iteration's checkpoint, once a first tensor is in the temporary file (the previous
  checkpoint must stay valid);
- ``raise-in-setup``: an unexpected exception while the rank loads its data (an agreed
  set-up step: every rank must exit with status 2); the iteration is ignored;
- ``raise-after-setup``: the same once the agreed set-up is over, when the rank builds its
  role, outside any agreement (it must abort the job); the iteration is ignored;
- ``nan``: the rank's first floating-point state tensor (a weight of its model, ASGD's
  theta) becomes NaN at the start of that iteration's step (``--on-nonfinite`` must stop
  the run before a checkpoint holds it);
- ``signal``: the rank sends itself SIGUSR1 at the start of that iteration's step (a stop
  signal at an exact iteration: the run stops with a checkpoint after that step).
"""
from __future__ import annotations

import logging
import os
import signal
import time

FAULTS = ("raise", "kill", "kill-in-checkpoint", "raise-in-setup", "raise-after-setup", "nan",
          "signal")
VARIABLE = "MPI_GAN_FAULT"


def injected_fault(rank: int, spec: str | None = None) -> tuple[int, str] | None:
    """``(iteration, how)`` of ``rank``'s fault in ``spec`` (default: ``$MPI_GAN_FAULT``),
    None if it names no fault for this rank. ValueError on an unknown fault."""
    spec = os.environ.get(VARIABLE, "") if spec is None else spec
    for fault in filter(None, spec.split(",")):
        fault_rank, iteration, *how = fault.split(":")
        how = how[0] if how else "raise"
        if how not in FAULTS:
            raise ValueError(f"{VARIABLE}={spec!r}: unknown fault {how!r}, one of {FAULTS}")
        if int(fault_rank) == rank:
            return int(iteration), how
    return None


def injected(how: str) -> RuntimeError:
    return RuntimeError(f"fault injected by {VARIABLE} ({how})")


class FaultyRole:
    """A role whose ``step`` meets the fault first at its iteration; everything else is the
    role's own."""

    def __init__(self, role, iteration: int, how: str, rank: int):
        self._role, self._iteration, self._how, self._rank = role, iteration, how, rank

    def __getattr__(self, name):
        return getattr(self._role, name)

    def step(self, iteration: int):
        if iteration == self._iteration:
            self._meet(iteration)
        return self._role.step(iteration)

    def _meet(self, iteration: int) -> None:
        log = logging.getLogger("mpi_gan")
        if self._how == "raise":
            raise RuntimeError(f"fault injected by {VARIABLE} at iteration {iteration} on "
                               f"rank {self._rank}")
        if self._how == "kill":
            log.info("%s: SIGKILL at iteration %d, Unix time %.6f", VARIABLE, iteration,
                     time.time())
            os.kill(os.getpid(), signal.SIGKILL)
        if self._how == "signal":
            log.info("%s: SIGUSR1 at iteration %d", VARIABLE, iteration)
            os.kill(os.getpid(), signal.SIGUSR1)
        if self._how == "nan":
            log.info("%s: NaN in the state at iteration %d", VARIABLE, iteration)
            values = dict(self._role.state())
            next(t for t in values.values() if t.is_floating_point()).fill_(float("nan"))
            self._role.load_state(values)


class FaultyAlgorithm:
    """An algorithm whose data loading, role building or roles meet the fault."""

    def __init__(self, algorithm, iteration: int, how: str, rank: int):
        self._algorithm, self._iteration, self._how, self._rank = algorithm, iteration, how, rank

    def __getattr__(self, name):
        return getattr(self._algorithm, name)

    def load_data(self, ctx):
        if self._how == "raise-in-setup":
            raise injected(self._how)
        return self._algorithm.load_data(ctx)

    def make_role(self, ctx):
        if self._how == "raise-after-setup":
            raise injected(self._how)
        role = self._algorithm.make_role(ctx)
        if self._how in ("raise", "kill", "nan", "signal"):
            return FaultyRole(role, self._iteration, self._how, self._rank)
        return role


def killing_writer(write, iteration: int):
    """``write`` (``io.shards.write_shard``), but this rank's shard of the checkpoint of
    ``iteration`` kills this process once the writer has written its first tensor into the
    temporary file."""
    def write_shard(directory, rank, at, algorithm, entries):
        if at == iteration:
            entries = _kill_after_first(entries)
        return write(directory, rank, at, algorithm, entries)
    return write_shard


def _kill_after_first(entries):
    it = iter(entries)
    yield next(it)
    os.kill(os.getpid(), signal.SIGKILL)  # the writer asks for the next: the first is written
    yield from it


def inject(trainer) -> None:
    """Install this rank's fault (``$MPI_GAN_FAULT``) into ``trainer``, if it has one."""
    fault = injected_fault(trainer.comm.Get_rank())
    if fault is None:
        return
    iteration, how = fault
    if how == "kill-in-checkpoint":
        trainer.write_shard = killing_writer(trainer.write_shard, iteration)
    else:
        trainer.algorithm = FaultyAlgorithm(trainer.algorithm, iteration, how,
                                            trainer.comm.Get_rank())
