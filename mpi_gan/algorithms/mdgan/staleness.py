"""Bounded-staleness MD-GAN (``--staleness-bound S`` > 0): its mathematics and the server's
bookkeeping, free of MPI, shared by the MPI roles and the single-process replay.

Each worker n has at most one step in flight. The batches of a step handed out at version
v (G updates done) are those of synchronous MD-GAN with k = 1 at iteration v: a pair of
two generated batches per version, split as synchronous MD-GAN splits them (the i-th
worker's X_g is batch i mod 2, its X_d the other: ``plan.batch_assignment``; i = n for
ranks 1..N), the same pair for
every worker handed a batch at v; a worker handed a second batch at the same version (a
fast one) gets the version's second pair, and so on (pair 0 of version v: latents of
synchronous MD-GAN's stream (v, j); pair i > 0: of the stream ("async", v, i, j)). When a
feedback F on a batch of a pair of version v arrives at version v', its staleness is
tau = v' - v:

* tau > S: the feedback is dropped (and counted);
* else F times ``staleness_scale(rule, tau)`` is added to its batch's feedback sum.

Once Q of the feedbacks pending are fresh (tau = 0; ``--staleness-quorum``, by default N
with eager batches: ``quorum_of``), or N are pending (as many as there are workers), or
with fresh batches and the default quorum once a fresh one is pending and no worker is
left to wait for but the slow ones the MPI server names (``RoundTrips``,
``ServerCore.update_due``), G takes one Adam step with the pending gradient divided by
(pending count x b): version v' + 1. (Only fresh ones count towards
Q: were stale ones to count, G would step before the workers keeping pace came back, and
their feedback would be stale in turn.) With ``--staleness-make-up`` (fresh batches, the
default quorum) G steps on N fresh feedbacks instead: a worker keeping pace whose fresh
feedback is taken while fewer fresh feedbacks are pending or coming from the workers
keeping pace than there are workers is handed the version's next pair at once
(``ServerCore.make_up_wanted``), so that each update has as many fresh feedbacks as
synchronous MD-GAN's (a version takes two steps of the workers keeping pace where one
worker is slow: measured in docs/results.md). The pending gradient is
the sum over pairs and their batches of J^T (the batch's feedback sum), J the Jacobian of
the batch at the parameters that generated it (the stale-gradient rule of asynchronous
SGD): one backward per pair, as synchronous MD-GAN's k = 1 does one per iteration (the
feedback sums, each in rank order, scaled by 1 / (pending count x b) before it, as
synchronous MD-GAN sums and scales its feedback). With every feedback fresh (no worker
lagging, fresh batches) and no lookahead an update is synchronous MD-GAN's, bit for bit
(on the CPU).

When a worker gets its next batches (``--staleness-batches``): ``eager``, as soon as the
server takes its feedback, so that it computes while G steps (its next feedback is then at
least one version stale: with no straggler every feedback is one version stale); ``fresh``,
a worker whose batches came from G's current version waits for G's next step, and one
whose batches were older (it fell behind) gets the current version's at once: with no
straggler and Q = N (or the default quorum, no worker slow) that is synchronous MD-GAN
(tau = 0), and with Q < N (or a slow worker) G steps once the others are back, the
slowest workers' feedback applied, stale, to a later step.
(An idle worker waits only while a step is in flight: else nothing could arrive.)

``staleness_scale``: ``inverse`` is AdaComp's 1 / max(1, tau) (Hardy et al. 2017), ``none``
leaves the feedback as it is (plain asynchronous SGD).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ...gan.adam import Adam
from ...gan.losses import latent_batch
from .plan import batch_assignment, feedback_gradients
from .worker import local_step, real_batch

SCALES = ("inverse", "none")


def staleness_scale(rule: str, tau: int) -> float:
    """The factor of a feedback of staleness ``tau`` >= 0: ``inverse`` 1 / max(1, tau),
    ``none`` 1."""
    if tau < 0:
        raise ValueError(f"staleness must be >= 0, got {tau}")
    if rule == "inverse":
        return 1.0 / max(1, tau)
    if rule == "none":
        return 1.0
    raise ValueError(f"unknown staleness scale {rule!r}: one of {', '.join(SCALES)}")


def accepted(tau: int, bound: int) -> bool:
    """Whether feedback of staleness ``tau`` is applied under ``--staleness-bound bound``."""
    return 0 <= tau <= bound


def async_latents(latent_dim: int, classes: int, batch: int, seed: int, version: int,
                  index: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """[(z, y)] of the two batches of pair ``index`` (0-based) of G's version ``version``:
    pair 0 has synchronous MD-GAN's latents of iteration ``version`` with k = 1 (the
    stream (version, j)), later pairs those of the stream ("async", version, index, j)."""
    stream = (version,) if index == 0 else ("async", version, index)
    return [latent_batch(latent_dim, classes, batch, seed, *stream, j) for j in range(2)]


def quorum_of(option: int, fresh: bool, workers: int, patience: float = 0.0) -> int:
    """Q of ``--staleness-quorum option`` with ``workers`` workers: the option itself, or
    for 0 (the default) with fresh batches 0, G waits for the workers keeping pace
    (``ServerCore.update_due``; with ``--staleness-patience`` 0, N - 1: G waits for all but
    its slowest worker, at least 1), and N with eager ones."""
    if option:
        return option
    if fresh:
        return 0 if patience else max(1, workers - 1)
    return workers


class RoundTrips:
    """The server's estimate of each worker's round trip (seconds from handing it batches
    to taking its feedback: its compute and the messages), an exponential moving average
    with weight ``weight`` on the newest; with fresh batches and the default quorum G does
    not wait for a worker whose round trip exceeds ``patience`` times the median of the
    others' (``slow``, kept up to date at each ``observe``: O(N log N))."""

    def __init__(self, patience: float, weight: float = 0.25):
        self.patience, self.weight = patience, weight
        self.seconds: dict[int, float] = {}
        self.slow: frozenset[int] = frozenset()  # the workers not waited for

    def observe(self, worker: int, seconds: float) -> None:
        last = self.seconds.get(worker)
        self.seconds[worker] = seconds if last is None else \
            last + self.weight * (seconds - last)
        self.slow = slower_than(self.seconds, self.patience)


def slower_than(seconds: dict[int, float], patience: float) -> frozenset[int]:
    """The keys of ``seconds`` whose value exceeds ``patience`` times the median of the
    other values (none for ``patience`` 0 or fewer than two values)."""
    if not patience or len(seconds) < 2:
        return frozenset()
    workers = np.array(list(seconds))
    values = np.array([seconds[n] for n in workers])
    order = np.argsort(values, kind="stable")
    ranked, n = values[order], len(values)
    # the others of the value at sorted position i: ranked without i, n - 1 values; their
    # j-th is ranked[j] before i, ranked[j + 1] from i on
    position = np.arange(n)

    def others(j: int) -> np.ndarray:
        return np.where(j < position, ranked[j], ranked[min(j + 1, n - 1)])

    middle = (n - 1) // 2
    median = others(middle) if (n - 1) % 2 else (others(middle - 1) + others(middle)) / 2
    return frozenset(int(w) for w in workers[order][ranked > patience * median])


def hands_on(update_due: bool, version: int, swap_period: int, workers: int,
             checkpoint_every: int, iterations: int, fresh: bool = False,
             behind: bool = True, make_up: bool = False) -> bool:
    """Whether a worker whose feedback the server has just taken, at G's version
    ``version``, gets its next batches at once. ``eager`` (``fresh`` false): yes, unless
    the update now due is followed by a drain (a swap, with ``workers`` > 1, or a
    checkpoint, or the run's end at version + 1), which would then wait for that step (the
    worker gets its batches after the drain). ``fresh``: only a worker ``behind`` (its
    feedback was on an older version's batches) and no update due; the others wait for the
    next version, unless it is to ``make_up`` for a slow worker (``--staleness-make-up``:
    ``ServerCore.make_up_wanted``)."""
    if fresh:
        return (behind or make_up) and not update_due
    if not update_due:
        return True
    after = version + 1
    return not ((swap_period and workers > 1 and after % swap_period == 0) or
                (checkpoint_every and after % checkpoint_every == 0) or after >= iterations)


def snapshot(g: nn.Module, spare: nn.Module | None = None,
             previous: list[torch.Tensor] | None = None, lookahead: float = 0.0) -> nn.Module:
    """G as it is now, in a module of its own whose parameters are leaves of their own:
    the G that generates the batches of this version, and that their feedback is
    differentiated at after G has moved on. Its buffers are G's own tensors, so that batch
    norm's running statistics move as synchronous MD-GAN's do (with a lookahead: those of
    the extrapolated G's batches). ``spare``: an earlier snapshot that no graph uses any
    more, overwritten (cheaper than a copy of G).
    ``previous`` (G's parameters before its last step) with ``lookahead`` L: the snapshot
    is G extrapolated, theta + L (theta - previous)."""
    if spare is None:
        spare = copy.deepcopy(g)
        for own, live in zip(spare.modules(), g.modules()):
            own._buffers = live._buffers
        for p in spare.parameters():
            p.grad = None  # G's last gradient, copied: not the snapshot's
    with torch.no_grad():
        for i, (own, live) in enumerate(zip(spare.parameters(), g.parameters())):
            own.copy_(live)
            if previous is not None and lookahead:
                own.add_(live - previous[i], alpha=lookahead)
            own.requires_grad_(True)
    return spare


def generate_at(version: nn.Module, z: torch.Tensor, graph: bool) -> torch.Tensor:
    """G(z) (b, C, H, W) with the ``snapshot`` ``version``, in train mode; with ``graph`` it
    keeps the autograd graph back to that version's parameters."""
    version.train()
    with torch.set_grad_enabled(graph):
        return version(z)


@dataclass
class Pair:
    """A version's pair of generated batches, handed to every worker that asks at that
    version (its ``index``-th for them): the i-th worker's X_g is batch i mod 2, its X_d
    the other (``plan.batch_assignment``, the paper's rule with K = 2)."""

    version: int                      # G's version that generated it
    index: int                        # its place among the pairs of that version
    x: list[torch.Tensor]             # the two batches (b, C, H, W), each with its graph
    labels: list[torch.Tensor | None]  # each batch's labels (b,) (ACGAN), else None
    version_g: nn.Module              # the snapshot of that version
    holders: int = 0                  # workers with a step in flight on it
    # the staleness-scaled feedbacks taken, not yet reduced: worker -> (its X_g batch,
    # feedback); one each at most (a worker's next batches of a version: its next pair)
    feedback: dict[int, tuple[int, torch.Tensor]] = field(default_factory=dict)

    @property
    def has_feedback(self) -> bool:
        return bool(self.feedback)

    def sums(self, scale: float) -> list[torch.Tensor | None]:
        """Each batch's feedback sum times ``scale`` (None: no feedback on it), summed in
        rank order whatever the order of arrival: synchronous MD-GAN's own
        ``plan.feedback_gradients``."""
        ranks = sorted(self.feedback)
        return feedback_gradients([self.feedback[n][1] for n in ranks],
                                  [self.feedback[n][0] for n in ranks], len(self.x), scale)


@dataclass
class InFlight:
    """What the server keeps of a worker's step in flight."""

    step: int                         # the worker's step index j
    pair: Pair                        # the batches it was handed
    batch: int                        # which of the pair's batches is its X_g


@dataclass
class Arrival:
    """One feedback as the server took it: the schedule's row."""

    worker: int
    step: int
    sent_version: int    # G's version that generated the batch
    version: int         # G's version when the feedback arrived
    applied: bool        # False: dropped (staler than the bound)
    pair: int = 0        # the index of its pair among those of ``sent_version``
    batch: int = 0       # which of the pair's two batches was the worker's X_g

    @property
    def tau(self) -> int:
        return self.version - self.sent_version


@dataclass
class ServerCore:
    """The bookkeeping of the server of bounded-staleness MD-GAN, without messages.

    ``hand_out(n)`` gives worker n its next batches; ``take(n, feedback)`` applies or drops
    the feedback of its step in flight and returns its ``Arrival``; ``update_due`` and
    ``update`` step G; ``close`` (before a checkpoint) reduces every pair's feedback and
    forgets the pairs. ``workers``: the world ranks of the workers."""

    g: nn.Module
    opt: Adam
    workers: list[int]
    bound: int
    rule: str
    batch: int
    latent_dim: int
    classes: int
    seed: int
    device: torch.device = torch.device("cpu")
    skip_nonfinite: bool = False                              # --on-nonfinite skip
    lookahead: float = 0.0                                    # --staleness-lookahead
    quorum: int = 0           # fresh feedbacks that step G (0: N; fresh: the adaptive rule)
    fresh: bool = False                  # --staleness-batches fresh
    make_up: bool = False                # --staleness-make-up: G steps on N fresh feedbacks
    version: int = 0
    steps: dict[int, int] = field(default_factory=dict)       # worker -> next step index
    # worker -> pairs it was handed at G's version ``version`` (older versions: none)
    handed: dict[int, int] = field(default_factory=dict)
    in_flight: dict[int, InFlight] = field(default_factory=dict)
    pairs: dict[tuple[int, int], Pair] = field(default_factory=dict)  # (version, index)
    pending: list[torch.Tensor] | None = None  # sum of J^T (staleness-scaled feedback)
    pending_count: int = 0
    fresh_count: int = 0                 # of them, computed on G's current version
    previous: list[torch.Tensor] | None = None  # G's parameters before its last step
    applied: int = 0
    dropped: int = 0
    nonfinite: int = 0        # feedbacks dropped for a NaN or an infinity (skip_nonfinite)
    _snapshot: tuple[int, nn.Module] | None = None            # (version, its snapshot)
    _snapshots: list[nn.Module] = field(default_factory=list)  # every snapshot made

    @classmethod
    def of(cls, cfg, g: nn.Module, opt: Adam, workers: list[int], classes: int,
           device: torch.device = torch.device("cpu")) -> "ServerCore":
        """The bookkeeping an MD-GAN configuration ``cfg`` (--staleness-* and the rest)
        asks for, over G ``g`` and its Adam ``opt``: the MPI server's and the replay's."""
        fresh = cfg.staleness_batches == "fresh"
        return cls(g, opt, workers, cfg.staleness_bound, cfg.staleness_scale, cfg.batch_size,
                   cfg.latent_dim, classes, cfg.seed, device, cfg.on_nonfinite == "skip",
                   cfg.staleness_lookahead, quorum_of(cfg.staleness_quorum, fresh,
                                                      len(workers), cfg.staleness_patience),
                   fresh, cfg.staleness_make_up)

    def __post_init__(self):
        for n in self.workers:
            self.steps.setdefault(n, 0)
            self.handed.setdefault(n, 0)
        # worker -> (its X_g, its X_d) among a pair's two batches, as synchronous k = 1
        self.assignment = {n: batch_assignment(i, 2)
                           for i, n in enumerate(sorted(self.workers), 1)}

    def _version_g(self) -> nn.Module:
        """The snapshot of this version (made at its first pair, in a snapshot that no
        pair uses any more if there is one)."""
        if self._snapshot is None or self._snapshot[0] != self.version:
            used = {id(pair.version_g) for pair in self.pairs.values()}
            spare = next((m for m in self._snapshots if id(m) not in used), None)
            version_g = snapshot(self.g, spare, self.previous, self.lookahead)
            if spare is None:
                self._snapshots.append(version_g)
            self._snapshot = (self.version, version_g)
        return self._snapshot[1]

    def _pair(self, index: int) -> Pair:
        """Pair ``index`` of this version, generated when first asked for."""
        key = (self.version, index)
        if key not in self.pairs:
            latents = async_latents(self.latent_dim, self.classes, self.batch, self.seed,
                                    self.version, index)
            version_g = self._version_g()
            self.pairs[key] = Pair(self.version, index,
                                   [generate_at(version_g, z.to(self.device), graph=True)
                                    for z, _ in latents], [y for _, y in latents], version_g)
        return self.pairs[key]

    def hand_out(self, worker: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None,
                                            int, int]:
        """Worker ``worker``'s next batches: (X_g, X_d, both detached, labels (2b,) of
        (y_g, y_d) or None, G's version, the step index)."""
        if worker in self.in_flight:
            raise RuntimeError(f"worker {worker} already has step "
                               f"{self.in_flight[worker].step} in flight")
        step, pair = self.steps[worker], self._pair(self.handed[worker])
        g, d = self.assignment[worker]
        pair.holders += 1
        self.handed[worker] += 1
        self.in_flight[worker] = InFlight(step, pair, g)
        self.steps[worker] = step + 1
        labels = torch.cat([pair.labels[g], pair.labels[d]]) \
            if pair.labels[g] is not None else None
        return pair.x[g].detach(), pair.x[d].detach(), labels, pair.version, step

    def take(self, worker: int, feedback: torch.Tensor) -> Arrival:
        """Apply (or drop) the feedback (b, C, H, W) of ``worker``'s step in flight: add it,
        scaled, to its X_g batch's feedback (the pair is differentiated at the update); with
        ``skip_nonfinite`` a feedback holding a NaN or an infinity is dropped too (counted
        in ``nonfinite``), as ASGD drops such a push. Keeps a scaled copy, never
        ``feedback`` itself: the caller receives the worker's next answer into it."""
        flight = self.in_flight.pop(worker)
        pair = flight.pair
        pair.holders -= 1
        arrival = Arrival(worker, flight.step, pair.version, self.version,
                          accepted(self.version - pair.version, self.bound), pair.index,
                          flight.batch)
        if arrival.applied and self.skip_nonfinite and not bool(torch.isfinite(feedback).all()):
            arrival.applied = False
            self.nonfinite += 1
        if arrival.applied:
            factor, j = staleness_scale(self.rule, arrival.tau), flight.batch
            feedback = feedback.to(pair.x[j].device)
            pair.feedback[worker] = (j, feedback.mul(factor))
            self.pending_count += 1
            self.fresh_count += arrival.tau == 0
            self.applied += 1
        else:
            self.dropped += 1
        if pair.holders == 0 and not pair.has_feedback and pair.version < self.version:
            del self.pairs[pair.version, pair.index]  # dropped: nobody needs it any more
        return arrival

    def _gradient(self, scale: float | None = None) -> list[torch.Tensor] | None:
        """The sum over the pairs with feedback, in the order they were generated, of J^T
        (``scale`` x each batch's feedback sum; None: unscaled), or None if none has
        feedback; forget the pairs nobody can use any more (no step in flight, an older
        version than G's)."""
        total = None
        for key, pair in list(self.pairs.items()):
            if pair.has_feedback:
                # a pair nobody holds is forgotten before it could be handed out again
                # (update moves to the next version, close clears the pairs)
                taken = [(x, f) for x, f in zip(pair.x, pair.sums(
                    1.0 if scale is None else scale)) if f is not None]
                grads = torch.autograd.grad([x for x, _ in taken],
                                            list(pair.version_g.parameters()),
                                            grad_outputs=[f for _, f in taken],
                                            retain_graph=pair.holders > 0)
                if total is None:
                    total = [grad.clone() for grad in grads]
                else:
                    for summed, grad in zip(total, grads):
                        summed.add_(grad)
                pair.feedback = {}
            if pair.holders == 0 and pair.version < self.version:
                del self.pairs[key]
        return total

    def _reduce(self) -> None:
        """Add every pair's J^T (feedback sum) to the pending gradient (unscaled: the count
        that scales it is known at the update) and forget the pairs nobody can use."""
        grads = self._gradient()
        if grads is not None and self.pending is None:
            self.pending = grads
        elif grads is not None:
            for total, grad in zip(self.pending, grads):
                total.add_(grad)

    def close(self) -> None:
        """Before a checkpoint (nothing in flight): reduce every pair's feedback into the
        pending gradient and forget the pairs, so that a resumed run and the run that goes
        on hold the same (the pairs are not checkpointed): pairs asked for later at this
        version are generated anew, after the ones already handed (``handed``)."""
        if self.in_flight:
            raise RuntimeError("the pairs are closed only when nothing is in flight")
        self._reduce()
        self.pairs.clear()

    def awaited(self) -> list[int]:
        """The workers that could still send a fresh feedback on G's current version: with
        a step in flight on this version's batches, or idle with none of them yet (with
        fresh batches ``ready`` names them)."""
        return [n for n in self.workers
                if (n in self.in_flight and self.in_flight[n].pair.version == self.version) or
                (n not in self.in_flight and self.handed[n] == 0)]

    def update_due(self, slow: frozenset[int] = frozenset()) -> bool:
        """Whether G steps now: N feedbacks pending (of any staleness), or Q fresh ones
        (``quorum``); with ``make_up`` N fresh ones, whoever sent them; with fresh
        batches and the default quorum (``quorum`` 0), a fresh one at least and no worker left to wait for but those in ``slow`` (the MPI
        server's ``RoundTrips``; without it: none left at all)."""
        if self.make_up:
            return self.fresh_count >= len(self.workers)
        if self.pending_count >= len(self.workers):
            return True
        if self.quorum or not self.fresh:
            return self.fresh_count >= (self.quorum or len(self.workers))
        return self.fresh_count >= 1 and all(n in slow for n in self.awaited())

    def make_up_wanted(self, slow: frozenset[int] = frozenset()) -> bool:
        """With ``make_up``: whether a worker keeping pace whose fresh feedback was just
        taken gets the version's next pair, as fewer fresh feedbacks are pending or
        coming (steps in flight on this version's batches of workers not in ``slow``) than
        there are workers; without: never."""
        if not self.make_up:  # no count on every feedback taken without the option
            return False
        coming = sum(1 for n, flight in self.in_flight.items()
                     if flight.pair.version == self.version and n not in slow)
        return self.fresh_count + coming < len(self.workers)

    def update_allowed(self) -> bool:
        """Whether some set of slow workers makes ``update_due`` true (the replay checks a
        recorded step with it where the schedule does not hold the server's slow calls:
        one written before they were recorded)."""
        return self.update_due(frozenset(self.workers))

    def ready(self, idle: list[int]) -> list[int]:
        """Which of the ``idle`` workers get their batches now, in rank order: all of them
        (``eager``); with ``fresh`` those that have had none of G's current version, or all
        of them when no step is in flight (else nothing would arrive: the steps of this
        version were all taken and G is not yet due, with feedback dropped)."""
        idle = sorted(idle)
        if not self.fresh or not self.in_flight:
            return idle
        return [n for n in idle if self.handed[n] == 0]

    def update(self) -> None:
        """One Adam step of G with the pending gradient / (pending count x b); version + 1.
        The pairs' feedback sums are scaled before their backward, as synchronous MD-GAN
        scales its feedback (so that with every feedback fresh and at most two workers per
        batch, summed in either order alike, G's step is synchronous MD-GAN's bit for
        bit, without a lookahead); what a checkpoint reduced earlier is scaled after."""
        scale = 1.0 / (self.pending_count * self.batch)
        grads = self._gradient(scale)
        if self.pending is not None:
            earlier = [total.mul(scale) for total in self.pending]
            grads = earlier if grads is None else [g.add_(e) for g, e in zip(grads, earlier)]
        self.opt.zero_grad(set_to_none=True)
        for p, grad in zip(self.g.parameters(), grads):
            p.grad = grad
        before = [p.detach().clone() for p in self.g.parameters()] if self.lookahead else None
        if self.opt.step() and before is not None:  # a skipped step keeps the last one
            self.previous = before
        self.pending, self.pending_count, self.fresh_count = None, 0, 0
        self.version += 1
        self.handed = dict.fromkeys(self.handed, 0)
        self._reduce()  # forgets this version's pairs that nobody holds

    # ------------------------------------------------------------ checkpoints
    def state(self) -> list[tuple[str, torch.Tensor]]:
        """The bookkeeping a checkpoint holds: version, each worker's next step and the
        pairs it was handed at this version, the pending gradient and count, the counters,
        G's parameters before its last step (with a lookahead).
        Steps in flight and pairs are not part of it: the server drains the steps and
        ``close``-s the pairs before a checkpoint (``AsyncServer.before_checkpoint``);
        at other times (the numerics watch) the feedback the pairs hold is left out."""
        ranks = torch.tensor(sorted(self.steps), dtype=torch.int64)
        entries = [("async/counters", torch.tensor([self.version, self.pending_count,
                                                     self.applied, self.dropped,
                                                     self.nonfinite, self.fresh_count],
                                                    dtype=torch.int64)),
                   ("async/workers", ranks),
                   # a pair's two batches each a worker's X_g (not one X_g for all)
                   ("async/pair_batches", torch.tensor([2], dtype=torch.int64)),
                   ("async/steps", torch.tensor([self.steps[int(n)] for n in ranks],
                                                dtype=torch.int64)),
                   ("async/handed", torch.tensor([self.handed[int(n)] for n in ranks],
                                                 dtype=torch.int64))]
        for (name, p), total in zip(self.g.named_parameters(),
                                    self.pending or [None] * len(list(self.g.parameters()))):
            entries.append((f"async/pending/{name}",
                            torch.zeros_like(p.detach()) if total is None else total.clone()))
        if self.previous is not None:
            entries += [(f"async/previous/{name}", before.clone())
                        for (name, _), before in zip(self.g.named_parameters(), self.previous)]
        return entries

    def load_state(self, values: dict[str, torch.Tensor]) -> None:
        if "async/handed" not in values:
            raise ValueError("this checkpoint of MD-GAN with a staleness bound was written by "
                             "an earlier version of it: it cannot be resumed exactly; start "
                             "a new run")
        if "async/pair_batches" not in values:
            raise ValueError("this checkpoint of MD-GAN with a staleness bound was written "
                             "when every worker's X_g was the same batch of a pair (mpi-gan "
                             "before commit 860d291, which splits each pair as synchronous "
                             "MD-GAN does): it cannot be resumed exactly by this version; "
                             "resume it with a checkout before that commit, or start a new "
                             "run")
        counters = [int(v) for v in values["async/counters"]]
        counters += [0] * (6 - len(counters))  # written before the quorum: 0 fresh counted
        (self.version, self.pending_count, self.applied, self.dropped, self.nonfinite,
         self.fresh_count) = counters
        self.steps = {int(n): int(s) for n, s in zip(values["async/workers"],
                                                      values["async/steps"])}
        self.handed = {int(n): int(s) for n, s in zip(values["async/workers"],
                                                       values["async/handed"])}
        self.pending = [values[f"async/pending/{name}"].clone().to(p.device)
                        for name, p in self.g.named_parameters()] \
            if self.pending_count else None
        self.previous = [values[f"async/previous/{name}"].clone().to(p.device)
                         for name, p in self.g.named_parameters()] \
            if any(key.startswith("async/previous/") for key in values) else None
        if self.lookahead and self.previous is None and self.version > 0:
            raise ValueError("this checkpoint holds no G before its last step, which "
                             "--staleness-lookahead extrapolates from: it cannot be resumed "
                             "exactly with it")
        self.in_flight, self.pairs, self._snapshot = {}, {}, None


def worker_step(d: nn.Module, opt: Adam, shard, cfg, worker: int, step: int,
                x_g: torch.Tensor, x_d: torch.Tensor, labels: torch.Tensor | None,
                device: torch.device, straggler=None) -> tuple[torch.Tensor, float, float]:
    """Worker ``worker``'s ``step``-th step: ``cfg.disc_steps`` D steps on its real batch of
    that step (``real_batch_indices`` of the step index) against X_d, then the feedback on
    X_g; (feedback (b, C, H, W), mean D loss, G loss). A ``straggler`` (``--slow``) sleeps
    after computing, before the feedback goes out."""
    x_r, y_r = real_batch(shard, cfg, worker, step, device)
    return local_step(d, opt, cfg, x_r, y_r, x_g, x_d, labels, straggler)
