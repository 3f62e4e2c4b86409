"""Bounded-staleness MD-GAN over MPI (``--staleness-bound S`` > 0): rank 0's
``AsyncServer`` and the workers' ``AsyncWorker``, stepped by ``train.asynchronous``.

The mathematics and the server's bookkeeping are ``staleness.py``'s. Messages (MD-GAN's
kinds, no new ones):
  batch_g   server -> worker: a header of 4 int64 (command, G's version, step index,
            argument), then for WORK the float32 bytes of X_g; the other commands are
            the header alone: SWAP (argument: the swap index), STATE (write your shard of
            the checkpoint of iteration <argument>), STOP.
  batch_d   server -> worker: X_d (WORK only); labels: the ACGAN labels of X_g then X_d.
  feedback  worker -> server: the raw float32 feedback, or its compressed payload.
  losses    worker -> server: (D loss, G loss) of the step, float32.
  swap      worker -> worker: as synchronous MD-GAN's.

The server takes the feedbacks in the order they arrive; with ``--staleness-batches
eager`` a worker whose feedback arrives gets its next batches at once (the pair of G's
version then), so that it computes while the server updates G, unless the update now due
is followed by a drain; with ``fresh`` only a worker that fell behind does, the others
wait for G's next version (``staleness.hands_on``). Idle workers (at the start, after a
drain, waiting for a version) get theirs, in rank order, whenever the server is about to
wait for a feedback (``ServerCore.ready``). G steps once as many feedbacks are pending as
there are workers (with ``--staleness-make-up`` fresh ones: the workers keeping pace are
handed the version's next pairs to make up for the slow ones), or ``--staleness-quorum``
fresh ones (``staleness.quorum_of``), or (by default with fresh batches) once every worker keeping pace has sent its fresh feedback:
the server measures each worker's round trip (``staleness.RoundTrips``) and does not wait
for one more than ``--staleness-patience`` times slower than the others
(``ServerCore.update_due``). It records every feedback it takes (and whether it handed the
worker on), every drain, swap and closing of the pairs, and every worker its round trips
call slow or no longer, in the ``schedule`` table, each
row with G's version then (which says where G stepped, as timings are not deterministic):
with it ``replay.py`` repeats the run in one process.
A drain (before a checkpoint, and before each swap: every ``swap_period`` versions) hands
out nothing and takes every feedback in flight, so that the workers are idle: then they
write their shards, or swap discriminators all at once (no worker waits in a swap for a
peer that waits for the server).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ... import compression
from ...comm.transport import ANY_SOURCE, Pending, Transport, TransportError
from ...compression.payload import Payload
from ...data import Shard
from ...gan.adam import Adam
from ...gan.ema import update_average
from ...io.runlog import Metrics
from .config import MdganConfig
from .protocol import HEADER
from .server import GeneratorState
from .staleness import RoundTrips, ServerCore, hands_on, worker_step
from .worker import DiscriminatorState, feedback_name, swap_discriminator

WORK, SWAP, STATE, STOP = 1, 2, 3, 4
ARRIVAL, DRAIN, SWAPPED, CLOSED, SLOW = 0, 1, 2, 3, 4  # schedule events


def schedule_table() -> Metrics:
    """The server's record, one row per event: ``event`` (0 a feedback taken, 1 a drain
    begins, 2 the workers swap, 3 the pairs are closed before a checkpoint, 4 the server's
    round trips (``RoundTrips``) call ``worker`` slow (``applied`` 1) or no longer (0),
    recorded before the feedback whose round trip changed that, and with ``worker`` 0 at
    the first step of each process, whose round trips are measured anew: none is slow;
    a schedule without it was recorded before the slow calls were; for the events other
    than 0 ``step``, ``pair`` and ``batch`` are 0 and ``sent_version`` is ``version``),
    ``worker`` and ``step`` (the feedback's worker and its step index; 0 for the others),
    ``sent_version``, ``pair`` and ``batch`` (G's version that generated the batch, the
    pair's index among that version's, and which of its two batches was the worker's X_g:
    a schedule without it was recorded when every worker's X_g was one batch), ``version``
    (G's version at the event), ``applied`` (1
    applied, 0 dropped as staler than the bound; for a swap: its index), ``handed_on`` (1:
    the worker got its next batches at once, ``staleness.hands_on``; 0: it idled until
    the server next waited and ``ServerCore.ready`` named it: with fresh batches, in
    G's next version)."""
    return Metrics({name: (np.int64, ()) for name in SCHEDULE_COLUMNS})


SCHEDULE_COLUMNS = ("event", "worker", "step", "sent_version", "pair", "batch", "version",
                    "applied", "handed_on")


def _event(event: int, version: int, argument: int = 0, worker: int = 0
           ) -> tuple[str, dict]:
    return ("schedule", dict(event=event, worker=worker, step=0, sent_version=version,
                             pair=0, batch=0, version=version, applied=argument,
                             handed_on=0))


class AsyncServer(GeneratorState):
    """Rank 0: G, its Adam, the bookkeeping (``ServerCore``) and the messages."""

    def __init__(self, transport: Transport, generator: nn.Module, optimizer: Adam,
                 cfg: MdganConfig, device: torch.device, sample_shape: tuple[int, ...],
                 classes: int, swap_period: int, average: nn.Module | None = None):
        self.t, self.g, self.opt, self.cfg, self.device = transport, generator, optimizer, \
            cfg, device
        self.average, self.swap_period = average, swap_period
        workers = [n for n in transport.alive if n != 0]
        self.core = ServerCore.of(cfg, generator, optimizer, workers, classes, device)
        self.shape = (cfg.batch_size, *sample_shape)
        self.idle = list(workers)
        self.decoder = None if cfg.compress == "none" else compression.parse_spec(cfg.compress)
        self.last_losses = np.full((transport.size - 1, 2), np.nan, dtype=np.float32)
        self.unreported = set(workers)  # their losses are NaN in the metrics rows so far
        self.header = torch.zeros(4, dtype=torch.int64)
        self.last = None
        # the messages: hand-outs, and the receives posted for their answers at each
        # hand-out (as the synchronous server posts every receive before it waits), into
        # one buffer per worker: worker -> [feedback (uncompressed), losses]; compressed
        # feedback (of any size) is probed for and kept in ``arrived`` until its losses are in
        self.pending = Pending()
        self.posted: dict[int, list] = {}
        self.arrived: dict[int, torch.Tensor] = {}
        self.probed = 0  # compressed feedbacks received so far
        self.unanswered = -1  # completions + probed when ``_answered`` last found nobody
        # the feedback's bytes, as the worker sends them
        self.inbox = {n: torch.empty(self.shape).view(-1).view(torch.uint8) for n in workers} \
            if self.decoder is None else {}
        self.losses_in = {n: torch.empty(2) for n in workers}
        # the round trips, measured where they decide when G steps (fresh batches, the
        # default quorum); worker -> perf_counter at its hand-out; the end of the last step
        adaptive = self.core.fresh and not self.core.quorum
        self.trips = RoundTrips(cfg.staleness_patience if adaptive else 0.0)
        self.handed_at: dict[int, float] = {}
        self.step_end: float | None = None

    @property
    def version(self) -> int:
        return self.core.version

    # ---------------------------------------------------------------- messages
    def _signal(self, worker: int, command: int, argument: int = 0) -> None:
        self.header[:] = torch.tensor([command, self.core.version, 0, argument])
        self.t.send_tensor(self.header.view(torch.uint8), worker, "batch_g")

    def _hand_out(self, workers: list[int]) -> None:
        """Hand each of ``workers`` its next batches and post the receives of its answer:
        every message started at once and completed whenever MPI finishes it, while the
        server waits (``Pending``; a large message waits for its receiver to take it: one
        after the other, each worker's would wait for the one before)."""
        add = self.pending.add
        for worker in workers:
            x_g, x_d, labels, version, step = self.core.hand_out(worker)
            self.handed_at[worker] = time.perf_counter()
            head = torch.tensor([WORK, version, step, 0], dtype=torch.int64)
            message = torch.cat([head.view(torch.uint8),
                                 x_g.detach().cpu().contiguous().view(-1).view(torch.uint8)])
            add(self.t.isend_tensor(message, worker, "batch_g"))
            add(self.t.isend_tensor(x_d.detach().cpu().contiguous(), worker, "batch_d"))
            if labels is not None:
                add(self.t.isend_tensor(labels, worker, "labels"))
            feedback = [] if self.decoder is not None else [
                add(self.t.irecv_into(self.inbox[worker], worker, "feedback"))]  # bytes
            self.posted[worker] = feedback + [
                add(self.t.irecv_into(self.losses_in[worker], worker, "losses"))]
        self.pending.test()

    def _answered(self) -> int | None:
        """A worker whose feedback and losses are in (``Pending.wait``'s test), or None;
        compressed feedback is probed for here."""
        if self.decoder is not None:
            got = self.t.try_recv_any_size(ANY_SOURCE, "feedback")
            if got is not None:
                buf, worker = got
                self.arrived[worker] = buf  # decoded once taken, not while waiting
                self.probed += 1
        seen = self.pending.completed + self.probed
        if seen == self.unanswered:  # nothing came in since the last scan found nobody
            return None
        for worker, requests in self.posted.items():
            if all(request.done for request in requests) and \
                    (self.decoder is None or worker in self.arrived):
                return worker
        self.unanswered = seen
        return None

    def _feedback(self, buf: torch.Tensor, worker: int) -> torch.Tensor:
        """The compressed feedback ``buf`` of ``worker``, decoded (b, C, H, W)."""
        payload, end = Payload.from_bytes(buf.numpy())
        if end != buf.numel() or payload.shape != self.shape or payload.dtype != torch.float32:
            raise TransportError(f"feedback from worker {worker}: payload of shape "
                                 f"{payload.shape} {payload.dtype} ({buf.numel() - end} "
                                 f"trailing bytes), expected {self.shape} float32")
        return self.decoder.decompress(payload)

    def _take(self, draining: bool) -> list[tuple[str, dict]]:
        """Wait for the next feedback from any worker and apply (or drop) it; outside a
        drain the worker then gets its next batches at once where ``staleness.hands_on``
        says so (eager: so that it computes while the server updates G; fresh: only a
        worker behind, or with --staleness-make-up one keeping pace that makes up for a
        slow one), else it idles until ``ServerCore.ready`` names it. The schedule's rows:
        the changes its round trip made to the slow set, then the feedback's."""
        worker = self.pending.wait(self._answered)
        called = self.trips.slow
        self.trips.observe(worker, time.perf_counter() - self.handed_at[worker])
        rows = [_event(SLOW, self.core.version, int(n in self.trips.slow), n)
                for n in sorted(called ^ self.trips.slow)]
        del self.posted[worker]
        # ``take`` keeps a scaled copy: the buffer is free for the worker's next answer
        feedback = self._feedback(self.arrived.pop(worker), worker) \
            if self.decoder is not None else \
            self.inbox[worker].view(torch.float32).reshape(self.shape)
        self.last_losses[worker - 1] = self.losses_in[worker].numpy()
        self.unreported.discard(worker)
        arrival = self.core.take(worker, feedback)
        cfg = self.cfg
        slow = self.trips.slow
        due = self.core.update_due(slow)
        # --staleness-make-up: a worker keeping pace makes up for the slow ones
        make_up = worker not in slow and self.core.make_up_wanted(slow)
        handed_on = not draining and hands_on(due, self.core.version,
                                              self.swap_period, len(self.core.workers),
                                              cfg.checkpoint_every, cfg.iterations,
                                              self.core.fresh, arrival.tau > 0, make_up)
        if handed_on:
            self._hand_out([worker])
        else:
            self.idle.append(worker)
        return rows + [("schedule", dict(
            event=ARRIVAL, worker=worker, step=arrival.step,
            sent_version=arrival.sent_version, pair=arrival.pair, batch=arrival.batch,
            version=arrival.version, applied=int(arrival.applied),
            handed_on=int(handed_on)))]

    def _drain(self) -> list[tuple[str, dict]]:
        rows = [_event(DRAIN, self.core.version)]
        while self.core.in_flight:
            rows += self._take(draining=True)
        self._settle()
        return rows

    def _settle(self) -> None:
        """Complete the hand-outs still pending (their workers have answered, or are
        idle): nothing is in flight after a drain."""
        self.pending.wait(lambda: True if not len(self.pending) else None)

    # ----------------------------------------------------------- skeleton hooks
    def step(self, iteration: int) -> list[tuple[str, dict]]:
        """Take feedbacks until enough are pending, then one step of G (one version)."""
        tic, rows = time.perf_counter(), []
        if self.step_end is not None:  # evaluations, checkpoints: not the workers' time
            for worker in self.core.in_flight:
                self.handed_at[worker] += tic - self.step_end
        else:  # this process's first step: its round trips are measured anew, none slow
            rows.append(_event(SLOW, self.core.version))
        while not self.core.update_due(self.trips.slow):
            ready = self.core.ready(self.idle)
            self._hand_out(ready)
            for worker in ready:
                self.idle.remove(worker)
            rows += self._take(draining=False)
        self.core.update()
        if self.average is not None:
            update_average(self.average, self.g, self.cfg.g_ema)
        if self.swap_period and self.core.version % self.swap_period == 0 and \
                len(self.core.workers) > 1:
            rows += self._drain()
            index = self.core.version // self.swap_period
            rows.append(_event(SWAPPED, self.core.version, index))
            for worker in self.core.workers:
                self._signal(worker, SWAP, index)
        # each worker's latest losses (NaN: none reported yet, ``unreported``), after the
        # drain's reports: the rows are checked as a whole
        taken = [row for kind, row in rows if kind == "schedule" and row["event"] == ARRIVAL]
        tau = [row["version"] - row["sent_version"] for row in taken if row["applied"]]
        self.last = dict(iteration=self.core.version, seconds=time.perf_counter() - tic,
                         d_loss=self.last_losses[:, 0].copy(),
                         g_loss=self.last_losses[:, 1].copy(),
                         server_bytes_out=self.t.sent_total(), applied=len(tau),
                         dropped=len(taken) - len(tau), tau_sum=int(sum(tau)))
        rows.append(("metrics", self.last))
        self.step_end = time.perf_counter()
        return rows

    def before_checkpoint(self, final: bool, workers_have_state: bool
                          ) -> list[tuple[str, dict]]:
        """Take every feedback in flight (the workers then idle), hand out nothing, and
        close the pairs (``ServerCore.close``)."""
        rows = self._drain() if self.core.in_flight else []
        self.core.close()
        return rows + [_event(CLOSED, self.core.version)]

    def request_state(self, worker: int, iteration: int) -> None:
        self._signal(worker, STATE, iteration)

    def after_checkpoint(self) -> None:
        """Nothing: idle workers get their batches when the server next waits."""

    def finish(self) -> None:
        self._settle()
        for worker in self.core.workers:
            self._signal(worker, STOP)

    def progress(self) -> str:
        d_loss, g_loss = np.nanmean(self.last_losses, axis=0)
        core = self.core
        nonfinite = f", {core.nonfinite} of them non-finite" if core.nonfinite else ""
        return (f"D loss {d_loss:.4f}  G loss {g_loss:.4f}  feedback applied "
                f"{core.applied}, dropped {core.dropped} (staler than "
                f"{self.cfg.staleness_bound}{nonfinite})  server sent "
                f"{self.t.sent_total() / 1e6:.1f} MB")

    def state(self) -> list[tuple[str, torch.Tensor]]:
        return super().state() + self.core.state()

    def load_state(self, values: dict[str, torch.Tensor]) -> None:
        super().load_state(values)
        workers = list(self.core.workers)
        self.core.load_state(values)
        if sorted(self.core.steps) != workers:
            raise RuntimeError(f"this checkpoint of MD-GAN with a staleness bound has workers "
                               f"{sorted(self.core.steps)}, this run {workers}: it resumes "
                               "only on the world size it was written with")
        self.idle = list(self.core.workers)


class AsyncWorker(DiscriminatorState):
    """A worker: serves the server's commands until STOP."""

    def __init__(self, transport: Transport, discriminator: nn.Module, optimizer: Adam,
                 shard: Shard, cfg: MdganConfig, device: torch.device,
                 channel: compression.Channel | None = None, straggler=None):
        self.t, self.d, self.opt, self.shard = transport, discriminator, optimizer, shard
        self.cfg, self.device, self.channel, self.straggler = cfg, device, channel, straggler
        self.n = transport.rank
        self.workers = [n for n in transport.alive if n != 0]
        self.shape = (cfg.batch_size, *shard.images.shape[1:])
        self.x_d = torch.empty(self.shape)
        self.labels = torch.empty(2 * cfg.batch_size, dtype=torch.int64)
        self.losses_out = torch.empty(2)
        self.steps = 0  # steps done by this process

    def serve(self, send_state, measure) -> None:
        """Answer the server's commands until STOP; each step runs through ``measure``
        (its compute time: the D steps, the feedback and a straggler's sleep)."""
        self.measure = measure
        while True:
            buf, _ = self.t.recv_any_size(0, "batch_g")
            command, _, step, argument = (int(v) for v in buf[:HEADER].view(torch.int64))
            if command == WORK:
                self._work(buf[HEADER:], step)
            elif command == SWAP:
                swap_discriminator(self.t, self.d, self.opt, self.cfg, self.workers, self.n,
                                   argument)
            elif command == STATE:
                send_state(argument)
            elif command == STOP:
                return
            else:
                raise TransportError(f"worker {self.n}: unknown command {command} from the "
                                     "server")

    def _work(self, payload: torch.Tensor, step: int) -> None:
        cfg = self.cfg
        x_g = payload.view(torch.float32).reshape(self.shape).to(self.device)
        self.t.recv_into(self.x_d, 0, "batch_d")
        labels = self.t.recv_into(self.labels, 0, "labels").to(self.device) if cfg.acgan \
            else None
        feedback, d_loss, g_loss = self.measure(
            worker_step, self.d, self.opt, self.shard, cfg, self.n, step, x_g,
            self.x_d.to(self.device), labels, self.device, self.straggler)
        if self.channel is None:
            message = feedback.detach().cpu().contiguous().view(-1).view(torch.uint8)
        else:
            message = torch.from_numpy(
                self.channel.encode(feedback, feedback_name(self.n)).to_bytes())
        self.t.send_tensor(message, 0, "feedback")
        self.losses_out[:] = torch.tensor([d_loss, g_loss])
        self.t.send_tensor(self.losses_out, 0, "losses")
        self.steps += 1

