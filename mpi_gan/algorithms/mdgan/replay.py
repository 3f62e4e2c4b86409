"""The single-process replay of a bounded-staleness MD-GAN run (``--staleness-bound`` > 0).

Arrivals over MPI are not deterministic, so the server records what it did in the run's
``schedule`` table (``async_roles.schedule_table``). Given that record, everything else is:
``replay`` holds G and every worker's D in one process and repeats the run event by event,
with the server's own bookkeeping (``staleness.ServerCore``) and the workers' step
(``staleness.worker_step``). As the MPI server does, it hands the idle workers their
batches (in rank order, those ``ServerCore.ready`` names) before each feedback it takes,
and a worker whose feedback it takes
its next batches at once where the record says the server did (``handed_on``: the server's
rule depends on the run's --iterations, which a resumed run may change); it runs a worker's
step as soon as its batches exist (a worker's result depends only on its own D and its
batches: swaps happen only while every worker idles). Each recorded arrival is checked
against what the replay computes of it (its step, versions, pair, applied or dropped), and
every other event's version. G steps where the record's versions say the server stepped it
(the server's adaptive quorum depends on timings; an update due after a drain is made at
the start of its next step, and a run stopped by a signal ends without it), checked
against the rule: no step before its quorum, none missed where nobody was left to wait
for (``ServerCore.update_due``, given the workers the server's round trips called slow,
which the record holds from each process's first step on; for a record, or the part of
one, written before they were, ``update_allowed``: some set of slow workers allowed the
step). With fresh batches each worker's hand-on is checked against the rule too
(``staleness.hands_on``: behind, or making up for a slow worker); eager hand-ons are
followed as recorded. The MPI run
must equal it (tests/mpi/test_mdgan.py), resumed or not.
"""
from __future__ import annotations

import numpy as np
import torch

from ...config import disc_outputs, latent_classes
from ...data import plan_data
from ...gan.ema import make_average, update_average
from ...gan.losses import make_adam
from ...models import make_discriminator, make_generator
from .async_roles import ARRIVAL, CLOSED, DRAIN, SCHEDULE_COLUMNS as COLUMNS, SLOW, SWAPPED
from .config import MdganConfig
from .reference import swapped
from .staleness import ServerCore, hands_on, worker_step
from .worker import feedback_channel, feedback_name

class ReplayError(RuntimeError):
    """The record does not follow from the run's configuration: another run's schedule,
    or a replay that drifted."""


class Replica:
    """Bounded-staleness MD-GAN in one process: G, its moving average, the server's
    bookkeeping (``core``) and every worker's D, Adam, shard and feedback channel.
    ``hand_out(n)`` gives worker n its next batches and runs its step at once (its
    feedback waits in ``feedback[n]`` for the server to take it), ``update`` steps G,
    ``swap(index)`` swaps the discriminators (every worker idle)."""

    def __init__(self, cfg: MdganConfig, world_size: int):
        self.cfg, self.workers = cfg, list(range(1, world_size))
        plans = {n: plan_data(cfg, len(self.workers), n) for n in self.workers}
        self.shards = {n: p.shard for n, p in plans.items()}
        self.mean_shard = plans[1].mean_shard
        shape, self.skip = plans[1].spec.shape, cfg.on_nonfinite == "skip"
        self.g = make_generator(cfg.model, cfg.latent_dim, cfg.seed, shape)
        self.average = make_average(self.g) if cfg.g_ema else None
        self.core = ServerCore.of(cfg, self.g, make_adam(self.g, cfg.lr_g, cfg.beta1,
                                                         cfg.beta2, self.skip),
                                  self.workers, latent_classes(cfg))
        self.discs = {n: make_discriminator(cfg.model, disc_outputs(cfg), cfg.seed, n, shape)
                      for n in self.workers}
        self.d_opts = {n: make_adam(d, cfg.lr_d, cfg.beta1, cfg.beta2, self.skip)
                       for n, d in self.discs.items()}
        self.channels = {n: feedback_channel(cfg) for n in self.workers}
        self.feedback: dict[int, torch.Tensor] = {}

    def hand_out(self, n: int) -> None:
        x_g, x_d, labels, _, step = self.core.hand_out(n)
        fb, _, _ = worker_step(self.discs[n], self.d_opts[n], self.shards[n], self.cfg, n,
                               step, x_g, x_d, labels, torch.device("cpu"))
        if self.channels[n] is not None:  # what the server decodes from the payload
            fb = self.channels[n].compressor.decompress(
                self.channels[n].encode(fb, feedback_name(n)))
        self.feedback[n] = fb

    def take(self, n: int):
        """The server takes worker n's feedback: its ``Arrival``."""
        return self.core.take(n, self.feedback.pop(n))

    def update(self) -> None:
        self.core.update()
        if self.average is not None:
            update_average(self.average, self.g, self.cfg.g_ema)

    def swap(self, index: int) -> None:
        self.discs, self.d_opts = swapped(self.cfg, index, self.discs, self.d_opts, self.skip)


def replay(cfg: MdganConfig, world_size: int, schedule: dict[str, np.ndarray]):
    """(G, its moving average or None, {n: D held by worker n}) after the events of
    ``schedule`` (column -> array, ``COLUMNS``), on ``world_size`` ranks."""
    replica = Replica(cfg, world_size)
    core, hand_out, update = replica.core, replica.hand_out, replica.update
    missing = [c for c in COLUMNS if c not in schedule]
    if missing:
        raise ReplayError(f"the schedule has no column {', '.join(missing)}: it was written "
                          "by an earlier version of bounded-staleness MD-GAN")
    idle, draining = list(replica.workers), False
    # the workers the server's round trips called slow, and the calls recorded before the
    # next feedback taken (its round trip's): they count from its take on. Recorded from a
    # process's first step (its row of worker 0) on: a run begun before they were, and
    # resumed since, is checked only loosely up to there
    recorded, slow, calls = False, frozenset(), []
    rows = zip(*(np.asarray(schedule[c], dtype=np.int64) for c in COLUMNS))
    for position, (event, worker, step, sent, pair, batch, version, applied, handed_on) in \
            enumerate(rows):
        if version == core.version + 1:  # G stepped before this event
            if not (core.update_due(slow) if recorded else core.update_allowed()):
                called = f" (workers called slow: {sorted(slow)})" if recorded else ""
                raise ReplayError(f"schedule row {position}: G stepped to version {version} "
                                  f"with {core.fresh_count} fresh of {core.pending_count} "
                                  f"feedbacks pending, fewer than its quorum{called}")
            update()
        if version != core.version:
            raise ReplayError(f"schedule row {position}: event {event} at version {version}, "
                              f"replayed at {core.version}")
        if event == DRAIN:
            draining = bool(core.in_flight)
            continue
        if event == SWAPPED:
            replica.swap(int(applied))
            continue
        if event == CLOSED:
            core.close()
            continue
        if event == SLOW:
            if worker == 0:  # a process's first step: none called slow
                recorded, slow, calls = True, frozenset(), []
            else:
                calls.append((int(worker), bool(applied)))
            continue
        if event != ARRIVAL:
            raise ReplayError(f"schedule row {position}: unknown event {event}")
        if not draining:
            if core.update_due(slow):
                raise ReplayError(f"schedule row {position}: a feedback taken at version "
                                  f"{version} with {core.fresh_count} fresh of "
                                  f"{core.pending_count} pending and no worker left to wait "
                                  "for: G should have stepped first")
            for n in core.ready(idle):
                hand_out(n)
                idle.remove(n)
        if int(worker) not in core.in_flight:
            raise ReplayError(f"schedule row {position}: worker {worker} has no step in flight")
        arrival = replica.take(int(worker))
        for n, called in calls:
            slow = slow | {n} if called else slow - {n}
        calls = []
        if handed_on and draining:
            raise ReplayError(f"schedule row {position}: worker {worker} handed on in a drain")
        if recorded and core.fresh and not draining:  # the server's rule, to the letter
            due = core.update_due(slow)
            make_up = int(worker) not in slow and core.make_up_wanted(slow)
            if bool(handed_on) != hands_on(due, core.version, 0, len(core.workers), 0, 0,
                                           fresh=True, behind=arrival.tau > 0,
                                           make_up=make_up):
                raise ReplayError(
                    f"schedule row {position}: worker {worker} "
                    f"{'handed on' if handed_on else 'left idle'} after a feedback of "
                    f"staleness {arrival.tau} with G {'due' if due else 'not due'}, "
                    f"{core.fresh_count} fresh feedbacks pending, workers called slow "
                    f"{sorted(slow)}: the rule says otherwise"
                    + (f" (make-up {'wanted' if make_up else 'not wanted'})"
                       if core.make_up else ""))
        elif handed_on and core.fresh and arrival.tau == 0 and \
                not core.make_up_wanted(frozenset(core.workers)):
            raise ReplayError(f"schedule row {position}: worker {worker} handed on after a "
                              "fresh feedback (fresh batches: it waits for the next version"
                              + (", and as many fresh feedbacks as workers were pending or "
                                 "coming: none to make up for)" if core.make_up else ")"))
        if handed_on:  # as the record says: it depends on the run's --iterations then
            hand_out(int(worker))
        else:
            idle.append(int(worker))
        got = (arrival.step, arrival.sent_version, arrival.pair, arrival.batch,
               arrival.version, int(arrival.applied))
        if got != (step, sent, pair, batch, version, applied):
            raise ReplayError(f"schedule row {position}: recorded (step, sent version, pair, "
                              f"batch, version, applied) "
                              f"{(step, sent, pair, batch, version, applied)}, replayed {got}")
        if draining:
            draining = bool(core.in_flight)
    return replica.g, replica.average, replica.discs
