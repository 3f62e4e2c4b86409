"""ASGD server (rank 0): holds theta and applies every push as it arrives, from any worker.

Receives its transport, model, test set, validation set and config as arguments.
One skeleton ``step`` applies one push (AdaComp's staleness-aware step, or a
plain one); the pull that answers it goes out at the start of the next step, so
a checkpoint can find that worker idle. Evaluations (every ``eval_every``
pushes and at ``iterations``) use the validation set if there is one, and then
the test set once, at ``iterations``; else the test set.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ...comm.transport import ANY_SOURCE, Transport
from ...data import Shard
from ...io.state import module_state
from ...models import evaluate
from ...train.numerics import NonFiniteError
from .protocol import HEADER, STATE, STOP, decode_push, layer_offsets
from .staleness import TouchLog, apply_parts


class AsgdServer:
    """theta (flat float32), per-parameter touch counts, the push log."""

    def __init__(self, transport: Transport, model: nn.Module, lr: float, use_staleness: bool,
                 test: Shard | None = None, eval_every: int = 0, iterations: int = 0,
                 validation: Shard | None = None):
        self.t, self.model, self.lr, self.use_staleness = transport, model, lr, use_staleness
        self.test, self.eval_every, self.iterations = test, eval_every, iterations
        self.validation = validation
        self.layers = layer_offsets(model)
        size = sum(p.numel() for p in model.parameters())
        self.pull = torch.zeros(HEADER + 4 * size, dtype=torch.uint8)
        self.header = self.pull[:HEADER].view(torch.int64)
        self.theta = self.pull[HEADER:].view(torch.float32)
        self.theta.copy_(parameters_to_vector(model.parameters()).detach())
        self.touches = torch.zeros(size, dtype=torch.int64)  # updates applied per parameter
        self.pulled_at: dict[int, int] = {}  # worker -> version of its last pull
        self.log = TouchLog()  # index sets applied since the oldest pull still out
        self.log_peak_bytes = 0
        self.workers = list(range(1, transport.size))
        self.push_counts = np.zeros(transport.size, dtype=np.int64)
        self.version = 0
        self.computing: set[int] = set()  # workers with a push in flight
        self.idle: list[int] = list(self.workers)  # workers owed a pull
        self.started = time.perf_counter()
        self.received = 0     # bytes of the pushes applied by this process
        self.applied = 0      # pushes applied by this process
        self.skip_nonfinite, self.skip_limit = False, 1  # --on-nonfinite skip, --log-every
        self.skipped = 0  # non-finite pushes dropped
        self.skipped_in_a_row: dict[int, int] = {}  # worker -> its last pushes dropped
        self.accuracy = float("nan")       # of the last evaluation (validation if any)
        self.test_accuracy = float("nan")  # of the last evaluation on the test set

    # -------------------------------------------------------------- messages
    def send_pull(self, worker: int) -> None:
        """Send theta with its version and the worker's next step; remember the pull."""
        self.header[0], self.header[1] = self.version, int(self.push_counts[worker])
        self.pulled_at[worker] = self.version
        self.t.send_tensor(self.pull, worker, "pull")
        self.computing.add(worker)

    def _send_signal(self, worker: int, signal: int, argument: int = 0) -> None:
        self.header[0], self.header[1] = signal, argument
        self.t.send_tensor(self.pull[:HEADER], worker, "pull")

    def receive_push(self) -> tuple[int, torch.Tensor]:
        buf, worker = self.t.recv_any_size(ANY_SOURCE, "push")
        self.push_counts[worker] += 1
        self.computing.discard(worker)
        return worker, buf

    def apply(self, worker: int, buf: torch.Tensor) -> dict | None:
        """Apply one push; returns its log row (without timing), or None for a non-finite
        push dropped (``skip_nonfinite``; NonFiniteError after ``skip_limit`` in a row)."""
        t_pull, parts = decode_push(buf, self.layers)
        if self.skip_nonfinite and not all(bool(torch.isfinite(v).all()) for _, v in parts):
            self.skipped += 1
            row = self.skipped_in_a_row[worker] = self.skipped_in_a_row.get(worker, 0) + 1
            if row >= self.skip_limit:
                raise NonFiniteError(
                    f"non-finite values (NaN or inf) in the last {row} pushes of worker "
                    f"{worker} (rank {worker}), at push {self.version + 1}, even with "
                    "--on-nonfinite skip: the run has diverged. Lower --lr and resume from a "
                    "checkpoint before it")
            return None
        self.skipped_in_a_row[worker] = 0
        since = self.pulled_at[worker]
        sent, tau_max, tau_sum = apply_parts(
            self.theta, self.touches, lambda layer, where: self.log.tau(layer, where, since),
            parts, self.lr, self.use_staleness)
        self.version += 1
        self.log.record(self.version, [where for where, _ in parts])
        self.log.forget_up_to(min((self.pulled_at[w] for w in self.computing),
                                  default=self.version))
        self.log_peak_bytes = max(self.log_peak_bytes, self.log.nbytes)
        self.applied += 1
        self.received += int(buf.numel())
        return {"push": self.version, "worker": worker, "t_pull": t_pull,
                "delay": self.version - 1 - t_pull, "sent": sent, "tau_max": tau_max,
                "tau_sum": tau_sum, "bytes": int(buf.numel())}

    def _apply_and_log(self, worker: int, buf: torch.Tensor) -> list[tuple[str, dict]]:
        row = self.apply(worker, buf)
        if row is None:  # dropped: nothing applied, nothing to log
            return []
        rows = [("metrics", {**row, "seconds": time.perf_counter() - self.started})]
        v = self.version
        held = self.validation
        samples = held if held is not None else self.test
        if samples is not None and (v % self.eval_every == 0 or v == self.iterations):
            rows.append(self._evaluate(samples, held is not None))
            if held is not None and v == self.iterations and self.test is not None:
                rows.append(self._evaluate(self.test, False))  # the test set, once
        return rows

    def _evaluate(self, samples: Shard, validation: bool) -> tuple[str, dict]:
        """Evaluate theta on ``samples`` (the validation set if ``validation``, else the
        test set); returns the eval table's row."""
        accuracy, loss = evaluate(self.model_with_theta(), samples.images, samples.labels)
        if validation or self.validation is None:
            self.accuracy = accuracy
        if not validation:
            self.test_accuracy = accuracy
        return ("metrics/eval", {"push": self.version, "accuracy": accuracy, "loss": loss,
                                 "validation": int(validation)})

    # ------------------------------------------------------- skeleton hooks
    def step(self, iteration: int) -> list[tuple[str, dict]]:
        """Pull every idle worker, then apply the next push to arrive (from any worker)."""
        while self.idle:
            self.send_pull(self.idle.pop(0))
        worker, buf = self.receive_push()
        self.idle.append(worker)
        return self._apply_and_log(worker, buf)

    def before_checkpoint(self, final: bool, workers_have_state: bool
                          ) -> list[tuple[str, dict]]:
        """Let every push in flight land (applied below --iterations, counted but discarded
        at or above it), so that each worker is idle and can report its state. Without
        worker state a periodic checkpoint waits for nothing."""
        rows = []
        if not (final or workers_have_state):
            return rows
        while self.computing:
            worker, buf = self.receive_push()
            self.idle.append(worker)
            if self.version < self.iterations:
                rows += self._apply_and_log(worker, buf)
        return rows

    def request_state(self, worker: int, iteration: int) -> None:
        """Ask an idle worker to write its compressor state into its shard of the checkpoint
        of ``iteration`` (it answers with kind 'checkpoint')."""
        self._send_signal(worker, STATE, iteration)

    def after_checkpoint(self) -> None:
        """Nothing to do: idle workers are pulled at the next step."""

    def finish(self) -> None:
        for w in self.workers:
            self._send_signal(w, STOP)

    def progress(self) -> str:
        dense = 8 + 4 * self.theta.numel()  # version header + float32 gradient
        which = "test" if self.validation is None else "validation"
        return (f"{which} accuracy {self.accuracy:.4f}  "
                f"worker->server {self.received / 1e6:.2f} MB "
                f"({dense * self.applied / max(self.received, 1):.1f}x smaller than "
                f"uncompressed)  staleness log peak {self.log_peak_bytes / 1e3:.1f} KB" +
                (f"  non-finite pushes dropped {self.skipped}" if self.skipped else ""))

    def state(self) -> list[tuple[str, torch.Tensor]]:
        return [("server/theta", self.theta.clone()), ("server/touches", self.touches.clone()),
                ("server/push_counts", torch.from_numpy(self.push_counts.copy())),
                ("server/version", torch.tensor([self.version], dtype=torch.int64))]

    def load_state(self, values: dict[str, torch.Tensor]) -> None:
        self.theta.copy_(values["server/theta"])
        self.touches.copy_(values["server/touches"])
        self.push_counts[:] = values["server/push_counts"].numpy()
        self.version = int(values["server/version"][0])

    def published(self) -> list[tuple[str, torch.Tensor]]:
        return module_state(self.model_with_theta())

    def model_with_theta(self) -> nn.Module:
        vector_to_parameters(self.theta.clone(), self.model.parameters())
        return self.model
