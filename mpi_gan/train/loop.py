"""One training skeleton for every algorithm (the pytorch/examples DDP-tutorial shape).

``Trainer`` owns what all algorithms share: the agreed set-up (config check,
``--out``, logs, resume checkpoint, dataset cache, device, data), the
transport, the iteration loop, metric rows appended to the run file, progress
lines, the checkpoint writer and reader, resume. An algorithm
(``train/algorithm.py``) supplies its message kinds, its data, its roles and
a template of a worker's state; what a role supplies is declared in
``train/roles.py``.

Each execution model is a subclass with its own hooks: ``SynchronousTrainer``
(``train/synchronous.py``: MD-GAN, FL-GAN, standalone) steps every rank through
the same iterations; ``AsynchronousTrainer`` (``train/asynchronous.py``: ASGD)
steps rank 0 only, while workers ``serve`` the server's requests until it stops
them. ``train/entry.py`` picks the one of an algorithm.

Checkpoint, collective in the synchronous case: every rank writes its own state into
its own shard, in parallel (``io/shards.py``), and reports the shard's size and digest
to rank 0 (kind ``checkpoint``, with its cost counters), which then writes the manifest
(``io/checkpoint.py``): rank 0 never holds a worker's state. Resume: every rank reads its
own shard, verified first (``train/resume.py``). Every rank's torch RNG state is part of
its state.
"""
from __future__ import annotations

import contextlib
import os
import resource
import time

import numpy as np
import torch
from mpi4py import MPI

from ..comm.kinds import SKELETON_KINDS
from ..comm.preemption import StopFlag, signal_name
from ..comm.placement import gather_placement
from ..comm.transport import Transport, settle
from ..comm.ulfm import is_peer_failure
from ..config import latent_classes
from ..data import open_dataset, resolved_cache_dir
from ..io import lock as run_lock
from ..io import rows, shards
from ..io.checkpoint import checkpoint_path, prune_checkpoints, write_checkpoint
from ..io.traffic import Traffic
from ..io.runlog import Metrics, RunFile, RunRecord
from ..io.state import Layout, load_rng_state, rng_state
from ..metrics.evaluator import SCORES, Evaluator, generate
from ..seeding import derive_seed, seed_device
from . import roles
from .algorithm import Algorithm, Context, RunResult
from .cost import CostMeter, cost_datasets, merge_cost, read_cost, split_cost
from .elastic import elastic_table
from .launch import (FailedElsewhere, SetupFailed, abort_on_exception, agree, best_effort,
                     select_device)
from .startup import start_run
from .numerics import NonFiniteError, Watch
from .progress import Progress
from .recovery import Snapshots, faults_table, recover, truncate_after


def scores_table() -> Metrics:
    """Rank 0's evaluations: iteration (G updates done), wall_seconds (training-loop wall
    time so far), server_bytes (bytes rank 0 has sent and received so far), eval_seconds
    (the evaluation's own time), and every score of ``metrics.SCORES`` (float64, NaN where
    the dataset does not get it)."""
    return Metrics({"iteration": (np.int64, ()), "wall_seconds": (np.float64, ()),
                    "server_bytes": (np.int64, ()), "eval_seconds": (np.float64, ()),
                    **{name: (np.float64, ()) for name in SCORES}})


def launches_table() -> Metrics:
    """The run's launches, one row each (the first start, then every resume: after a
    preemption, a stop signal or a crash): iteration (where it started, int64),
    started_unix (float64, seconds since the epoch), world_size (int64). A launch that
    wrote no checkpoint leaves no row (a resume continues its checkpoint's table)."""
    return Metrics({"iteration": (np.int64, ()), "started_unix": (np.float64, ()),
                    "world_size": (np.int64, ())})


def stops_table() -> Metrics:
    """The run's stops by a signal (a preemption's SIGTERM, SLURM's warning signal, a
    user's Ctrl-C), one row each, written before the checkpoint the stop ends with:
    iteration (where it stopped, int64), stopped_unix (float64), signal (its number)."""
    return Metrics({"iteration": (np.int64, ()), "stopped_unix": (np.float64, ()),
                    "signal": (np.int64, ())})


def report_layout(template: list, measured: bool) -> Layout:
    """A worker's checkpoint message once its shard is written: the shard's record
    (``shard/record``, int64 (4,): ``io.shards.ShardRecord``) and, when the skeleton
    measures its cost (synchronous algorithms, and asynchronous ones whose workers time
    their steps), its cost counters (``cost/...``). Empty
    when workers keep no state."""
    if not template:
        return Layout([])
    return Layout([("shard/record", torch.zeros(4, dtype=torch.int64))] +
                  (CostMeter().entries() if measured else []))


def peak_memory_mb() -> float:
    """This process's peak resident set size so far, in MB (10^6 bytes; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def lost_before(transport: Transport, ckpt) -> list[int]:
    """Collective: the world ranks the checkpoint rank 0 resumes from records as dead (its
    ``faults`` table) and holds no state of; [] for a fresh run, and for an elastic
    resume, where every rank of the new world takes part (a rank of the table that a
    later elastic resume gave state again, or that the world no longer has, is not idle)."""
    mask = np.zeros(transport.size, dtype=np.int8)
    if ckpt is not None and ckpt.world_size == transport.size:
        held = set(ckpt.ranks())
        mask[[r for r in (int(r) for r in ckpt.tables.get("faults", {}).get("rank", []))
              if r < transport.size and r not in held]] = 1
    transport.broadcast(mask)
    return [int(r) for r in np.flatnonzero(mask)]


# tag of rank 0's message that tells an idle rank how the run ended (on the world
# communicator, whose other traffic is the collectives of the set-up)
IDLE_END_TAG = 7


class Trainer:
    """Runs ``algorithm`` under ``cfg`` on every rank of ``comm`` (collective); the base of
    the execution models' loops, which supply the hooks below."""

    measured = True  # workers' cost counters travel with their shards' reports
    write_checkpoint = staticmethod(write_checkpoint)  # the manifest's writer
    write_shard = staticmethod(shards.write_shard)  # each rank's (faults.py wraps it)

    def __init__(self, algorithm: Algorithm, cfg, comm: MPI.Comm | None = None,
                 restored=None):
        self.algorithm, self.cfg = algorithm, cfg
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.restored = restored  # restored(role): after a resumed rank's state is loaded

    # ------------------------------------------------------------ set-up
    def run(self) -> RunResult:
        """Set-up errors raise SetupFailed on every rank; any other failure aborts the job."""
        with abort_on_exception(self.comm):
            return self._run()

    def _run(self) -> RunResult:
        # from here on a stop signal only sets a flag (comm/preemption.py), during set-up too
        # (a long dataset conversion or score-classifier training is never cut mid-write: the
        # run stops after its first iteration); after a stop the handlers stay installed to
        # the exit, so SLURM's SIGTERM after a requeue kills nothing
        self.stop = StopFlag(announce=self.comm.Get_rank() == 0).install()
        try:
            return self._set_up_and_train()
        except SetupFailed:
            self.stop.restore()
            raise

    def _set_up_and_train(self) -> RunResult:
        cfg, comm, algo = self.cfg, self.comm, self.algorithm
        rank, size = comm.Get_rank(), comm.Get_size()
        began = time.perf_counter()
        self.scoring = [0.0, 0]  # rank 0's seconds scoring, evaluations
        log, ckpt, self.source, local = start_run(comm, cfg, algo.validate, algo.reader,
                                                  algo.elastic and algo.is_synchronous(cfg))
        with contextlib.suppress(FileNotFoundError):  # left by this rank's last stop
            os.unlink(finalized_mark(cfg.out, rank))
        device = agree(comm, lambda: select_device(getattr(cfg, "device", "cpu"), local))
        seed_device(device, derive_seed(cfg.seed, "device", rank))
        ctx = Context(cfg, comm, rank, size, device, log)
        ctx.data = agree(comm, lambda: algo.load_data(ctx))
        data_ready = time.perf_counter()
        self.evaluator = agree(comm, lambda: self._make_evaluator(ctx, ckpt))
        scorer_ready = time.perf_counter()
        torch.set_num_threads(cfg.threads)
        # every stream the algorithms draw is seed-derived; the global RNG is seeded too,
        # so that a run (and its checkpointed RNG state) is reproducible whatever uses it
        torch.manual_seed(derive_seed(cfg.seed, "global", rank))
        result = self._train(ctx, ckpt)
        if not result.stopped:  # every file of the run is written: --out is free again
            run_lock.release_all()  # (after a stop: in stopped_exit, once the marks are done)
        if rank == 0:  # where this launch's time went, one line per phase
            scoring, evaluations = self.scoring
            log.info("phase data: %.1f s (start-up, the dataset cache, each rank's shard)",
                     data_ready - began)
            scorer = self.evaluator
            log.info("phase classifier: %.1f s (%s)", scorer_ready - data_ready,
                     "nothing to score" if scorer is None else
                     "the score classifier: trained once per machine, then read from its cache"
                     if getattr(scorer, "classifier", None) is not None else "the scorer")
            log.info("phase training: %.1f s (checkpoints included, scoring not)",
                     time.perf_counter() - scorer_ready - scoring)
            log.info("phase scoring: %.1f s (%d evaluation%s)", scoring, evaluations,
                     "" if evaluations == 1 else "s")
        log.info("peak resident memory %.1f MB", peak_memory_mb())
        if not result.stopped:
            self.stop.restore()
        return result

    def _make_evaluator(self, ctx: Context, ckpt) -> Evaluator | None:
        """Rank 0's scorer (trains the score classifier on first use); None if this run
        scores nothing (not a GAN, ``--eval-every 0``, or no multiple of it ahead)."""
        cfg, start = ctx.cfg, ckpt.iteration if ckpt else 0
        if ctx.rank != 0 or not self.algorithm.evaluates or not cfg.eval_every or \
                (start // cfg.eval_every + 1) * cfg.eval_every > cfg.iterations:
            return None
        dataset = open_dataset(cfg)
        return Evaluator(dataset, dataset.key, resolved_cache_dir(cfg.cache_dir),
                         cfg.eval_samples, cfg.inception_weights, ctx.device, ctx.log.info,
                         inception_preprocessing=cfg.inception_preprocessing)

    def _train(self, ctx: Context, ckpt) -> RunResult:
        cfg, algo = self.cfg, self.algorithm
        self.ctx = ctx
        transport = ctx.transport = Transport(algo.kinds + SKELETON_KINDS, ctx.comm)
        # where this run resumes, and the token that names this launch's shard directories
        start = np.array([ckpt.iteration if ckpt else 0,
                          int.from_bytes(os.urandom(4), "little")], dtype=np.int64)
        ctx.start, self.token = (int(v) for v in transport.broadcast(start))
        self.written: dict[int, int] = {}  # iteration -> shard directories this launch made
        placement = gather_placement(transport, ctx.device)  # rank 0: /ranks, where each runs
        self.idle = lost_before(transport, ckpt)
        ctx.lost.update(self.idle)
        if self.idle and not transport.exclude(self.idle):
            return self._wait_idle(ctx)
        role = self.role = algo.make_role(ctx)
        roles.require(role, self.role_protocols(ctx), algo.name, ctx.rank)
        template = algo.worker_template(ctx)
        self.layout = Layout(template + rng_state() if template else [])
        self.message = report_layout(template, self.measured)
        self.meter = CostMeter()
        result = RunResult(role)
        self.snapshots = Snapshots() if getattr(cfg, "fault_tolerant", False) else None
        # every rank checks its own state before its shard holds it
        self.watch = Watch(cfg.on_nonfinite, cfg.out, ctx.start, ctx.log, ctx.size > 1,
                           ctx.lost, role.state, getattr(role, "unreported", None))
        if ctx.rank == 0:
            self.tables = algo.tables(ctx)
            if algo.evaluates:
                self.tables["scores"] = scores_table()
            if algo.fault_tolerant:
                self.tables["faults"] = faults_table()
            if algo.elastic:
                self.tables["elastic"] = elastic_table()
            self.tables["launches"] = launches_table()
            self.tables["stops"] = stops_table()
            self.cost_base, self.wall_base = np.zeros((ctx.size, 3)), 0.0
            self.extras = algo.extras(ctx)
            if ckpt is not None:
                self._resume_server(role, ckpt)
            self.tables["launches"].append(iteration=ctx.start, started_unix=time.time(),
                                           world_size=ctx.size)
            self.record = RunRecord(cfg, ctx.size, transport.kinds, self.tables,
                                    self.inherited_segments(ckpt))
            self.run_file = RunFile(
                os.path.join(cfg.out, "run.h5"), self.record, algo.run_format, ctx.start,
                transport.local_view(), algo.model_group, role.published(),
                {**self.extras, **cost_datasets(self.cost_base, self.wall_base), **placement})
            result.run_file = self.run_file.path
        elif ctx.start > 0 and self.layout.fields:
            values = self.source.read()
            if not self.source.whole:  # a new worker (elastic): its fresh state, and a copy
                copied = {k: v for k, v in values.items() if k.startswith(algo.copied_state)}
                values = {**dict(role.state() + rng_state()), **copied}
            # as it was sent before shards: the template's names and types
            self._load(role, {f.name: values[f.name].to(f.dtype).reshape(f.shape)
                              for f in self.layout.fields})
        ending = np.zeros(2, dtype=np.int64)  # the agreed stop signal, the last iteration
        self.drive(result, ending)
        # asynchronous workers learn it here; over the survivors if some died
        transport.broadcast(ending)
        ctx.log.info("control collectives: %d, %d bytes", transport.control["collectives"],
                     transport.control["bytes"])
        transport.free()
        if ctx.rank == 0:
            for n in self.idle:  # bookkeeping (not counted): the idle ranks' end
                ctx.comm.Send([ending, MPI.INT64_T], dest=n, tag=IDLE_END_TAG)
        result.stopped, result.iteration, result.start = int(ending[0]), int(ending[1]), ctx.start
        result.lost = tuple(sorted(ctx.lost))
        return result

    def _wait_idle(self, ctx: Context) -> RunResult:
        """A worker lost before the checkpoint this run resumes from (its state is not in
        it): it takes no part, and waits for rank 0 to tell how the run ended."""
        ctx.log.info("rank %d died before iteration %d (faults table): idle in this run",
                     ctx.rank, ctx.start)
        ending, status = np.zeros(2, dtype=np.int64), MPI.Status()
        settle([ctx.comm.Irecv([ending, MPI.INT64_T], source=0, tag=IDLE_END_TAG)], [status])
        return RunResult(None, stopped=int(ending[0]), iteration=int(ending[1]),
                         start=ctx.start, lost=tuple(sorted(ctx.lost)))

    # ------------------------------------------------ the execution model's hooks
    def role_protocols(self, ctx: Context) -> tuple[type, ...]:
        """The protocols this rank's role must follow (``train/roles.py``)."""
        raise NotImplementedError

    def drive(self, result: RunResult, ending: np.ndarray) -> None:
        """This rank's part of the training: by default the loop (``_loop``), which sets
        ``result.checkpoint`` and ``ending`` (the stop signal, the last iteration)."""
        result.checkpoint = self._loop()
        ending[:] = self.stopped, self.done

    def advance(self, role, done: int) -> tuple[list | None, int]:
        """One step from iteration ``done``: its rows and the iteration reached."""
        raise NotImplementedError

    def stop_signal(self) -> int:
        """The stop signal this rank acts on after a step (0: none)."""
        raise NotImplementedError

    def quiesce(self, final: bool, iteration: int) -> int:
        """Before rank 0 writes a checkpoint: the iteration it holds."""
        return iteration

    def ask_state(self, worker: int, iteration: int) -> None:
        """Before rank 0 receives ``worker``'s report of its shard of ``iteration``."""

    def traffic_totals(self, final: bool) -> Traffic:
        """Every rank's traffic counters, once the checkpoint's states are in."""
        return self.ctx.transport.totals()

    def after_checkpoint(self, final: bool) -> None:
        """After rank 0 wrote a checkpoint."""

    # ----------------------------------------------------------- restore
    def _load(self, role, values: dict[str, torch.Tensor]) -> None:
        role.load_state(values)
        load_rng_state(values)
        if self.restored is not None:
            self.restored(role)

    def _resume_server(self, role, ckpt) -> None:
        ctx, transport = self.ctx, self.ctx.transport
        if ckpt.kinds != transport.kinds:
            raise RuntimeError(f"{ckpt.path} counts message kinds {ckpt.kinds}, this "
                               f"algorithm {transport.kinds}")
        self._load(role, self.source.read())
        for path, table in self.tables.items():
            if path in ckpt.tables:  # scores: absent from checkpoints of older versions
                table.load(ckpt.tables[path])
                if self.inherited_segments(ckpt):  # they hold its rows; the next manifest
                    table.mark_stored(rows.STORE)  # names them
        transport.add_base(ckpt.traffic)
        self.cost_base, self.wall_base = read_cost(ckpt.path, ctx.size)
        if ckpt.world_size != ctx.size:  # elastic (train/elastic.py)
            before, after = ckpt.world_size - 1, ctx.size - 1
            self.tables["elastic"].append(iteration=ckpt.iteration, workers_before=before,
                                          workers_after=after)
            ctx.log.info("elastic resume at iteration %d: %d workers in the checkpoint, %d "
                         "now: the data planned anew, departing discriminators dropped, new "
                         "workers copying a drawn old worker's (train/elastic.py)",
                         ckpt.iteration, before, after)
        ctx.log.info("resumed from %s at iteration %d", ckpt.path, ctx.start)

    def inherited_segments(self, ckpt) -> list:
        """The row segments of ``ckpt`` that this run's manifests go on naming
        (``rows.carried_over``)."""
        return [] if ckpt is None else rows.carried_over(ckpt.path, ckpt.segments, self.cfg.out)

    # -------------------------------------------------------------- loop
    def _loop(self) -> str:
        """Step until ``--iterations``; checkpoints every ``--checkpoint-every`` and at the end.

        A stop signal (``self.stop``) ends the loop at the next iteration boundary with a
        checkpoint: synchronous algorithms agree on it every iteration (one Allreduce of
        one int); an asynchronous server acts on its own flag (every launcher signals
        every rank). With ``--fault-tolerant`` a dead worker's MPI error is caught here,
        the survivors recover (``train/recovery.py``) and run the interrupted iteration
        again. Returns the last checkpoint's path (None on workers)."""
        ctx, cfg = self.ctx, self.cfg
        self.done = self.last_checkpoint = ctx.start
        self.stopped = 0
        self.loop_start = time.perf_counter()
        self.progress = Progress(ctx.log, ctx.start, cfg.iterations) if ctx.rank == 0 else None
        stopping = False
        try:
            while True:
                try:
                    if self.done < cfg.iterations and not stopping:
                        stopping = self._advance()
                        if stopping:
                            ctx.log.info("%s received: checkpoint at iteration %d, then exit",
                                         signal_name(self.stopped), self.done)
                            stops = self.tables["stops"] if ctx.rank == 0 else None
                            # in the checkpoint the stop ends with; once, even if a lost
                            # worker makes the survivors run the stop's step again
                            if stops is not None and not (len(stops) and int(
                                    stops.rows["iteration"][-1]) == self.done):
                                stops.append(iteration=self.done, stopped_unix=time.time(),
                                             signal=int(self.stopped))
                        continue
                    if not stopping:
                        self.stopped = 0  # a signal during the last iteration stops nothing
                    self.done = self.checkpoint(self.done, final=True, finished=not stopping)
                    if self.snapshots is not None:  # uniform: every survivor ends, or none
                        ctx.transport.comm.Agree(1)
                    break
                except MPI.Exception as exc:
                    if self.snapshots is None or not is_peer_failure(exc):
                        raise
                    self._recover(time.time())
                    stopping = False  # the flag is still set: agreed again after the step
        finally:
            if self.progress is not None:
                self.progress.close()
        return self.final_path

    def _advance(self) -> bool:
        """One iteration from ``self.done`` (which it advances), its rows, progress,
        scores and checkpoint, then the stop agreement; True if the loop must stop."""
        ctx, cfg, role = self.ctx, self.cfg, self.role
        done, every = self.done, cfg.checkpoint_every
        if self.snapshots is not None:
            self.snapshots.take(done, role.state() + rng_state())
        rows, done = self.advance(role, done)
        self.done = done
        if ctx.rank == 0:
            self._record(rows, done)
            self.progress.step(done)
            if done % cfg.log_every == 0 or done == cfg.iterations:
                self.progress.line(done, role.progress())
                self.run_file.append_rows()
                self.watch.state(done, 0, role.state())
                self.watch.period(done)
            if self.evaluator is not None and done % cfg.eval_every == 0:
                generator = self.algorithm.generator(role)
                self.watch.state(done, 0, list(generator.state_dict().items()),
                                 "generator parameters")
                self._evaluate(done)
        if every and done // every > self.last_checkpoint // every and done < cfg.iterations:
            self.done = self.last_checkpoint = self.checkpoint(done, final=False)
        self.stopped = self.stop_signal()
        return bool(self.stopped) and self.done < cfg.iterations

    def _recover(self, detected: float) -> None:
        """After a peer's death (``--fault-tolerant``): agree with the survivors on the
        iteration to run again, restore this rank's state of then, plan over the
        survivors; rank 0 drops the rows of the undone steps and records the loss."""
        ctx, transport = self.ctx, self.ctx.transport
        failure = recover(transport, self.done, detected)
        ctx.lost.update(failure.lost)
        if failure.iteration in self.snapshots:  # this rank was in (or past) that iteration
            self._load(self.role, self.snapshots.restore(failure.iteration))
        elif failure.iteration != self.done:
            raise RuntimeError(f"fault tolerance: rank {ctx.rank} is at iteration {self.done} "
                               f"and kept no state for iteration {failure.iteration}")
        self.role.lose(failure.lost)
        self.done = failure.iteration
        ctx.log.warning("lost rank(s) %s: iteration %d runs again on %d workers (recovery "
                        "%.3f s)", failure.lost, failure.iteration, len(ctx.workers),
                        failure.seconds)
        if ctx.rank != 0:
            return
        truncate_after(self.tables, failure.iteration)
        for rank in failure.lost:
            self.tables["faults"].append(
                iteration=failure.iteration, rank=rank, detected_unix=failure.detected,
                silent_seconds=failure.detected - transport.heard[rank],
                recovery_seconds=failure.seconds, workers_left=len(ctx.workers))
        self.run_file.append_rows()
        self.progress.step(failure.iteration)

    def _wall(self) -> float:
        """Training-loop wall seconds so far, earlier segments of a resumed run included."""
        return self.wall_base + time.perf_counter() - self.loop_start

    def _evaluate(self, done: int) -> None:
        """Score rank 0's generator (``--eval-samples`` samples) into the scores table."""
        ctx, cfg, transport = self.ctx, self.cfg, self.ctx.transport
        tic = time.perf_counter()
        images = generate(self.algorithm.generator(self.role), cfg.latent_dim,
                          latent_classes(cfg), cfg.eval_samples, cfg.seed, ctx.device)
        scores = self.evaluator.score(images)
        self.tables["scores"].append(
            iteration=done, wall_seconds=self._wall(),
            server_bytes=transport.sent_total() + transport.received_total(),
            eval_seconds=time.perf_counter() - tic,
            **{name: scores.get(name, np.nan) for name in SCORES})
        self.run_file.append_rows()
        self.scoring[0] += time.perf_counter() - tic
        self.scoring[1] += 1
        text = "  ".join(f"{name} {scores[name]:.3f}" for name in self.evaluator.names)
        ctx.log.info("iter %d scores: %s (%.1f s)", done, text, time.perf_counter() - tic)
        self.progress.scored(text, done)

    def _record(self, rows, iteration: int) -> None:
        """Append a role's metric rows of ``iteration``, [(table path, row)], to rank 0's
        tables, and check them (``numerics.Watch.rows``: with --on-nonfinite stop, a
        non-finite loss ends the run, its row written to the run file first, best effort)."""
        for table, row in rows or ():
            self.tables[table].append(**row)
        try:
            self.watch.rows(iteration, rows)
        except NonFiniteError:
            best_effort(self.run_file.append_rows)  # the losses up to the bad one
            raise

    # -------------------------------------------------------- checkpoints
    def shard_directory(self, iteration: int) -> str:
        """The name of a new shard directory for the checkpoint of ``iteration`` (called once
        per write, in the same order on every rank that writes): this launch's token, plus
        the number of times it wrote that iteration before (a stop signal right after a
        periodic checkpoint writes the same iteration again), so that no shard a manifest
        names is ever replaced in place."""
        written = self.written.get(iteration, 0)
        self.written[iteration] = written + 1
        return shards.directory_name(iteration, (self.token + written) & 0xFFFFFFFF)

    def write_own_shard(self, iteration: int) -> shards.ShardRecord:
        """This rank's state (its role's and its RNG's) checked for non-finite values, then
        written into its shard of the checkpoint of ``iteration``. When workers write shards
        too, the ranks then agree on whether any failed (a full disk, a non-finite state:
        every rank may meet it at once), and only the lowest failing rank raises its error,
        every other rank ``FailedElsewhere``: the job ends with one message."""
        try:
            own = self.role.state()
            self.watch.state(iteration, self.ctx.rank, own)
            self.directory = self.shard_directory(iteration)
            record, failure = self.write_shard(
                os.path.join(self.cfg.out, "checkpoints", self.directory), self.ctx.rank,
                iteration, self.algorithm.name, own + rng_state()), None
        except MPI.Exception:
            raise
        except Exception as exc:  # noqa: BLE001 - agreed on below, then raised
            record, failure = None, exc
        if self.message.fields:
            first = self.ctx.transport.lowest_failing(failure is not None)
            if first is not None and first != self.ctx.rank:
                raise FailedElsewhere(first) from failure
        if failure is not None:
            raise failure
        return record

    def send_state(self, iteration: int) -> None:
        """A worker's part of a checkpoint: its shard, then the shard's record (and its
        cost counters) to rank 0."""
        if self.message.fields:
            record = self.write_own_shard(iteration)
            entries = [("shard/record", torch.from_numpy(record.to_array()))]
            if self.measured:
                entries += self.meter.entries()
            self.ctx.transport.send_tensor(self.message.pack(entries), 0, "checkpoint")

    def checkpoint(self, iteration: int, final: bool, finished: bool | None = None) -> int:
        """Write the checkpoint of ``iteration`` (collective for synchronous algorithms).

        ``final``: the last checkpoint of this process (asynchronous workers are stopped);
        ``finished`` (default ``final``): the run reached ``--iterations`` (a run stopped by
        a signal ends with a final, unfinished checkpoint). An asynchronous server first
        lets the pushes in flight land (``before_checkpoint``), which may advance it:
        returns the iteration the checkpoint holds. Every rank writes its shard at once;
        rank 0 writes the manifest once every worker has reported its shard."""
        ctx, cfg, algo, transport = self.ctx, self.cfg, self.algorithm, self.ctx.transport
        role, self.final_path = self.role, None
        if ctx.rank != 0:
            self.send_state(iteration)
            transport.totals()
            return iteration
        iteration = self.quiesce(final, iteration)
        path = checkpoint_path(cfg.out, iteration)
        cost = np.zeros((ctx.size, 3))
        cost[0] = self.meter.row()
        extras = dict(self.extras)
        workers = ctx.workers if self.message.fields else []
        for n in workers:
            self.ask_state(n, iteration)
        records = [self.write_own_shard(iteration)]
        for n in workers:  # each worker's report, its shard written (in parallel)
            values = self.message.unpack(transport.recv_into(self.message.empty(), n,
                                                             "checkpoint"))
            if self.measured:
                values, cost[n] = split_cost(values)
            records.append(shards.ShardRecord.from_array(values["shard/record"].numpy()))
        traffic = self.traffic_totals(final)  # every worker has sent all it counts
        extras.update(cost_datasets(merge_cost(self.cost_base, cost), self._wall()))
        self.write_checkpoint(path, self.record, algo.name, iteration,
                              self.directory, records, traffic, extras)
        prune_checkpoints(cfg.out, cfg.keep_checkpoints)
        self.run_file.update(iteration, traffic, role.published(),
                             finished=final if finished is None else finished,
                             datasets={k: v for k, v in extras.items() if k.startswith("cost/")})
        ctx.log.info("checkpoint %s (shards in %s), run file %s", path, self.directory,
                     self.run_file.path)
        self.after_checkpoint(final)
        self.final_path = path
        return iteration


def finalized_mark(out: str, rank: int) -> str:
    """The file by which ``rank`` says it has finalized MPI after a stop (removed by the
    rank at its next start)."""
    return os.path.join(out, "logs", f".finalized-{rank}")
