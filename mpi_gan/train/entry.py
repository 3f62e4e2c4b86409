"""An entry point's body and a run's end: parse the command line, train (the loop of the
algorithm's execution model), and leave: after a stop signal every rank finalizes MPI,
rank 0 last, and the job is requeued under SLURM.
"""
from __future__ import annotations

import ctypes
import logging
import os
import shlex
import sys
import time
from typing import NoReturn

from mpi4py import MPI

from ..comm.preemption import EXIT_PREEMPTED, requeue, requeue_command, signal_name
from ..comm.ulfm import ulfm_enabled
from ..io import lock as run_lock
from ..io.lock import process_alive
from . import faults
from .algorithm import Algorithm, RunResult
from .asynchronous import AsynchronousTrainer
from .launch import abort_on_exception
from .loop import finalized_mark
from .synchronous import SynchronousTrainer


def trainer_of(algorithm: Algorithm, cfg, comm: MPI.Comm | None = None, restored=None):
    """The loop of ``algorithm``'s execution model (synchronous or asynchronous), with this
    rank's injected fault if ``$MPI_GAN_FAULT`` names one (``train/faults.py``).
    ``restored(role)``: called on every rank right after its state and RNG are restored
    from a checkpoint (tests)."""
    loop = SynchronousTrainer if algorithm.is_synchronous(cfg) else AsynchronousTrainer
    trainer = loop(algorithm, cfg, comm, restored=restored)
    with abort_on_exception(trainer.comm):  # a malformed $MPI_GAN_FAULT ends the job
        faults.inject(trainer)
    return trainer


def run_algorithm(algorithm: Algorithm, cfg, comm: MPI.Comm | None = None,
                  restored=None) -> RunResult:
    """Train ``algorithm`` under ``cfg`` on every rank of ``comm`` (collective)."""
    return trainer_of(algorithm, cfg, comm, restored).run()


def run_main(algorithm: Algorithm, parse, argv: list[str] | None = None) -> int:
    """An entry point's body: parse the command line (errors printed by rank 0 only), train,
    and let rank 0 say where the files are."""
    comm = MPI.COMM_WORLD
    cfg = parse(sys.argv[1:] if argv is None else argv, quiet=comm.Get_rank() != 0)
    result = run_algorithm(algorithm, cfg, comm)
    if result.stopped:
        stopped_exit(comm, cfg, result)
    if comm.Get_rank() == 0:
        for line in algorithm.summary(result):
            print(line)
        print(f"done: run file {os.path.abspath(result.run_file)}, checkpoint "
              f"{os.path.abspath(result.checkpoint)}, logs "
              f"{os.path.abspath(os.path.join(cfg.out, 'logs'))}")
        print("\n".join(next_steps(cfg.out, algorithm.model_group == "generator")), flush=True)
    if result.lost and ulfm_enabled():
        exit_now(0)  # Open MPI's MPI_Finalize can hang once a rank has died
    return 0


def next_steps(out: str, generator: bool) -> list[str]:
    """The lines that end a run: what to do with its files, as commands to paste (this
    Python, its paths quoted for a POSIX shell); ``generator``: the run trained a GAN's
    generator."""
    run, q = os.path.abspath(out), shlex.quote
    python = q(sys.executable)
    analysis = os.path.join(run, "analysis")
    lines = ["next:",
             f"  {python} -m mpi_gan.analyze {q(run)} --out {q(analysis)}    # report.html: "
             "tables and plots" + (", sample grids" if generator else "")]
    if generator:
        lines += [f"  {python} -m mpi_gan.sample {q(run)} --n 64 --out "
                  f"{q(os.path.join(run, 'samples.png'))}    # images from its generator",
                  f"  {python} -m mpi_gan.evaluate {q(run)}    # its scores, again"]
    return lines


def exit_now(code: int, finalized: bool = False) -> NoReturn:
    """Flush the logs and standard streams, then leave without Python's shutdown (no
    MPI_Finalize from mpi4py's exit hook, no waiting on threads). ``finalized``: MPI_Finalize
    was called, so leave through the C library's ``exit``, which runs MPICH's exit handlers:
    a rank that skips them (``os._exit``) looks to MPICH's mpiexec like one that died, and it
    SIGKILLs every rank still running and reports signal 9."""
    for handler in logging.getLogger("mpi_gan").handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    if finalized:
        ctypes.PyDLL(None).exit(code)  # PyDLL keeps the GIL: no Python thread runs on
    os._exit(code)


def stopped_exit(comm: MPI.Comm, cfg, result: RunResult) -> NoReturn:
    """After a stop signal, every rank past the checkpoint: rank 0 says where it is; every
    rank finalizes MPI and marks it in ``<out>/logs/.finalized-<rank>`` (its host and
    process id). Once all have (10 s at most), the workers exit with status 0 and rank 0,
    last, requeues the job under SLURM (``comm/preemption.py`` says why only then) and
    exits with ``EXIT_PREEMPTED``, the job's status. Rank 0 leaves last because Open MPI's
    mpirun kills the ranks still alive as soon as one exits non-zero: it waits until the
    workers on its host have exited (their process ids gone; 10 s at most) and gives those on other hosts
    ``REMOTE_EXIT_GRACE`` seconds. Ranks lost earlier (``--fault-tolerant``) are not
    waited for."""
    if not result.lost:  # the survivors already agreed on the end (``Trainer._loop``)
        comm.Barrier()
    log = logging.getLogger("mpi_gan")
    rank, size = comm.Get_rank(), comm.Get_size()
    command = None
    if rank == 0:
        name = signal_name(result.stopped)
        print(f"stopped by {name} at iteration {result.iteration} of {cfg.iterations}: "
              f"checkpoint {os.path.abspath(result.checkpoint)}; continue with --resume auto "
              f"--out {cfg.out} (exit status {EXIT_PREEMPTED})", flush=True)
        command = requeue_command(result.stopped, result.iteration > result.start)
    finalized = not (result.lost and ulfm_enabled())  # Open MPI's can hang once a rank died
    if finalized:
        MPI.Finalize()
    marks = [finalized_mark(cfg.out, r) for r in range(size) if r not in result.lost]
    with open(finalized_mark(cfg.out, rank), "w") as mark:
        mark.write(f"{run_lock.this_host()} {os.getpid()}\n")
    deadline = time.monotonic() + FINALIZE_WAIT_SECONDS
    while not all(os.path.exists(m) for m in marks) and time.monotonic() < deadline:
        time.sleep(0.01)
    if rank != 0:
        exit_now(0, finalized)
    wait_for_exits([m for m in marks if m != finalized_mark(cfg.out, 0)],
                   time.monotonic() + FINALIZE_WAIT_SECONDS)
    run_lock.release_all()  # the workers are gone: the requeued or next job may take --out
    if command:
        requeue(command, log)
    exit_now(EXIT_PREEMPTED, finalized)  # the stop handlers still hold any further signal


FINALIZE_WAIT_SECONDS = 10.0
REMOTE_EXIT_GRACE = 2.0  # seconds rank 0 gives a rank on another host to exit


def wait_for_exits(marks: list[str], deadline: float) -> None:
    """Return once the processes named by the ``.finalized-*`` files ``marks`` have exited:
    those on this host (hostname and machine id: ``io.lock.same_host``) when their
    process id is gone or a zombie, those elsewhere (or whose mark cannot be read) after
    ``REMOTE_EXIT_GRACE`` seconds; at ``deadline`` (``time.monotonic``) at the latest."""
    local, remote = [], False
    for mark in marks:
        try:
            with open(mark) as f:
                where, pid = f.read().split()
            if run_lock.same_host(*run_lock.parse_host(where)):
                local.append(int(pid))
                continue
        except (OSError, ValueError):
            pass
        remote = True
    remote_until = min(deadline, time.monotonic() + REMOTE_EXIT_GRACE) if remote else 0.0
    while local and time.monotonic() < deadline:
        local = [pid for pid in local if process_alive(pid)]
        time.sleep(0.01)
    time.sleep(max(0.0, remote_until - time.monotonic()))
