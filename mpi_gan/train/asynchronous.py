"""The loop of asynchronous algorithms (ASGD, bounded-staleness MD-GAN): rank 0's server
applies the workers' messages as they arrive and counts its iterations itself
(``version``); the workers serve its requests until it stops them. A checkpoint first lets
the messages in flight land, then asks each worker for its state; a stop signal is acted
on by the server alone (every launcher signals every rank). Where the algorithm says so
(``measures_asynchronous_steps``), the server's steps and the workers' (each worker times
its own with the ``measure`` it is served) are measured as synchronous steps are."""
from __future__ import annotations

import numpy as np

from ..io.traffic import Traffic
from . import roles
from .algorithm import Context, RunResult
from .loop import Trainer


class AsynchronousTrainer(Trainer):
    """Rank 0 runs the loop, the workers ``serve``."""

    @property
    def measured(self) -> bool:
        return self.algorithm.measures_asynchronous_steps

    def role_protocols(self, ctx: Context) -> tuple[type, ...]:
        return (roles.AsynchronousServer if ctx.rank == 0 else roles.AsynchronousWorker,)

    def drive(self, result: RunResult, ending: np.ndarray) -> None:
        if self.ctx.rank == 0:
            super().drive(result, ending)
            return
        self.role.serve(self.send_state, self.meter.measure)
        self.ctx.transport.totals()

    def advance(self, role, done: int):
        if self.measured:
            return self.meter.measure(role.step, done), role.version
        return role.step(done), role.version

    def stop_signal(self) -> int:
        return self.stop.signal

    def quiesce(self, final: bool, iteration: int) -> int:
        rows = self.role.before_checkpoint(final, bool(self.layout.fields))
        self._record(rows, self.role.version)
        return self.role.version

    def ask_state(self, worker: int, iteration: int) -> None:
        self.role.request_state(worker, iteration)

    def traffic_totals(self, final: bool) -> Traffic:
        if not final:  # the workers go on: what rank 0 has seen
            return self.ctx.transport.local_view()
        self.role.finish()
        return self.ctx.transport.totals()

    def after_checkpoint(self, final: bool) -> None:
        if not final:
            self.role.after_checkpoint()
