"""What a role must provide to the training loops, declared (``typing.Protocol``).

A role is one rank's part of an algorithm, built by ``Algorithm.make_role``. States are
lists of named tensors, ``[(name, tensor)]``, in a fixed order: what a checkpoint holds
for the rank (its RNG state is added by the loop). Rows are ``[(table path, {column:
value})]`` for rank 0's metric tables (``Algorithm.tables``); workers return None.

Synchronous algorithms (MD-GAN, FL-GAN, standalone): every rank's role is a
``SynchronousRole``, stepped through the same iterations by ``train.synchronous``; rank 0's
is also a ``ServerRole``. Asynchronous algorithms (ASGD): rank 0's role is an
``AsynchronousServer``, stepped by ``train.asynchronous``; each worker's an
``AsynchronousWorker``, which serves the server's requests until it stops them.
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import torch

State = list[tuple[str, torch.Tensor]]
Rows = list[tuple[str, dict]]


@runtime_checkable
class Role(Protocol):
    """Every role: its state, for checkpoints, and its restoration on resume."""

    def state(self) -> State:
        """This rank's state (models, optimizer moments, counters), RNG excluded."""

    def load_state(self, values: dict[str, torch.Tensor]) -> None:
        """Restore what ``state`` returned (by name)."""


@runtime_checkable
class ServerRole(Role, Protocol):
    """Rank 0's role: what the run file publishes and what progress lines say."""

    def published(self) -> State:
        """The model rank 0 publishes in the run file (its group ``Algorithm.model_group``)."""

    def progress(self) -> str:
        """One short text of the latest losses or scores, for the progress line."""


@runtime_checkable
class SynchronousRole(Role, Protocol):
    """A role of a synchronous algorithm: one step per iteration, on every rank."""

    def step(self, iteration: int) -> Rows | None:
        """Train iteration ``iteration`` (0-based); rank 0 returns its metric rows."""


@runtime_checkable
class FaultTolerantRole(SynchronousRole, Protocol):
    """A synchronous role that goes on without dead workers (``--fault-tolerant``)."""

    def lose(self, lost: list[int]) -> None:
        """Forget the world ranks ``lost``: plan the next iterations over the survivors."""


@runtime_checkable
class AsynchronousServer(ServerRole, Protocol):
    """Rank 0's role of an asynchronous algorithm: applies the workers' messages as they
    arrive; ``version`` counts what it applied (its iterations)."""

    version: int

    def step(self, iteration: int) -> Rows | None:
        """Apply the next message(s) from ``iteration`` = ``version`` on; advances ``version``."""

    def before_checkpoint(self, final: bool, workers_have_state: bool) -> Rows | None:
        """Quiesce for a checkpoint: let the messages in flight land (which may advance
        ``version``); ``final``: stop the workers too. Returns the rows of what landed."""

    def request_state(self, worker: int, iteration: int) -> None:
        """Ask ``worker`` for its shard of the checkpoint of ``iteration`` (it answers with
        the loop's ``send_state(iteration)``)."""

    def after_checkpoint(self) -> None:
        """Let the workers go on after a checkpoint that was not the last."""

    def finish(self) -> None:
        """After the final checkpoint's states: the workers' last counts are in."""


@runtime_checkable
class AsynchronousWorker(Role, Protocol):
    """A worker of an asynchronous algorithm: serves until the server stops it."""

    def serve(self, send_state: Callable[[int], None], measure: Callable) -> None:
        """Answer the server's requests; call ``send_state(iteration)`` when it asks for its
        shard of a checkpoint. ``measure(step, *args)`` returns ``step(*args)``, timed
        (``train.cost.CostMeter.measure``): a worker whose algorithm
        ``measures_asynchronous_steps`` runs each step of its own through it."""


def members(protocol: type) -> list[str]:
    """The methods and attributes ``protocol`` declares, its bases' included."""
    names = set()
    for base in protocol.__mro__:
        if base in (Protocol, object) or base.__module__ == "typing":
            continue
        names.update(vars(base).get("__annotations__", {}))
        names.update(name for name, value in vars(base).items() if callable(value))
    return sorted(name for name in names if not name.startswith("_"))


def require(role, protocols: tuple[type, ...], algorithm: str, rank: int) -> None:
    """TypeError naming what ``role`` lacks of ``protocols`` (the algorithm's mistake, found
    when the role is built rather than mid-run). Members are looked up as attributes
    (``hasattr``), so a proxy that forwards them (``faults.FaultyRole``) passes: since
    Python 3.12 ``isinstance`` against a protocol does not see forwarded members."""
    for protocol in protocols:
        missing = [name for name in members(protocol) if not hasattr(role, name)]
        if missing:
            raise TypeError(f"{algorithm}: the role of rank {rank} ({type(role).__name__}) "
                            f"is not a {protocol.__name__}: it lacks {', '.join(missing)}")
