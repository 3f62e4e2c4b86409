"""The loop of synchronous algorithms (MD-GAN, FL-GAN, standalone): every rank steps
through the same iterations; a checkpoint is collective (every worker sends its state with
its cost counters, rank 0 writes them as they arrive); a stop signal is agreed every
iteration (one all-reduce of one int through the transport: ``agree_max``)."""
from __future__ import annotations

from . import roles
from .algorithm import Context
from .loop import Trainer


class SynchronousTrainer(Trainer):
    """Every rank runs the loop; each step's compute time is measured (``CostMeter``)."""

    def role_protocols(self, ctx: Context) -> tuple[type, ...]:
        step = roles.FaultTolerantRole if getattr(ctx.cfg, "fault_tolerant", False) \
            else roles.SynchronousRole
        return (step, roles.ServerRole) if ctx.rank == 0 else (step,)

    def advance(self, role, done: int):
        return self.meter.measure(role.step, done), done + 1

    def stop_signal(self) -> int:
        return self.ctx.transport.agree_max(self.stop.signal)
