"""Preemption: a signal only sets a flag; the ranks agree on it at an iteration boundary.

SIGINT (Ctrl-C) is a stop signal like SIGTERM; a second Ctrl-C, a second or more after
the first, ends the rank at once without a checkpoint (status 130).

SLURM warns a job before its time limit with the signal of ``--signal`` (jobs/ use
SIGUSR1), and ends it with SIGTERM (time limit, ``scancel``, preemption), then SIGKILL
after ``KillWait``. On SIGTERM, SIGUSR1 or SIGUSR2 the handler records the signal and
returns: nothing is written from inside a handler. At the next iteration boundary the
training loop makes every rank agree (``Transport.agree_max``: one all-reduce of one
int), writes a checkpoint and the job exits with ``EXIT_PREEMPTED`` (rank 0's status; it
leaves last, ``train.entry.stopped_exit``).

Under SLURM (``SLURM_JOB_ID`` set) rank 0 then requeues the job (``scontrol requeue``)
when the signal was SIGUSR1 or SIGUSR2, the warning signals, and the run advanced
since it started (so a signal that arrives at once cannot loop): after every rank has
finalized MPI, because the requeue kills what is left of the job at once, and a rank
killed inside MPICH leaves its shared-memory file behind, on which the requeued job
(same job id, same step id) would hang in MPI_Init. Under jobs/ rank 0 only writes the
command to ``MPI_GAN_REQUEUE_FILE`` and the batch script runs it once the step is over.
SIGTERM is not requeued by the program: it is what ``scancel`` sends, and a cancelled job must stay
cancelled; a scheduler that preempts with requeue requeues the job itself.

MPICH's ``mpiexec`` forwards SIGINT, SIGTERM and SIGUSR1 to every rank (SIGUSR2 ends
mpiexec itself); Open MPI's ``mpirun`` forwards SIGUSR1 and SIGUSR2 (SIGINT and SIGTERM
kill the job); ``srun`` delivers all of them to every task (docs/hpc.md has the table).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
# a second SIGINT this long after the first aborts at once (Ctrl-C twice): a terminal's
# Ctrl-C reaches every rank directly and again through mpiexec, within milliseconds
REPEAT_SIGINT_SECONDS = 1.0
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's status of a process ended by Ctrl-C
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
# sysexits' EX_TEMPFAIL: stopped on request with a checkpoint written; run again with
# --resume auto (or the same --resume) to continue
EXIT_PREEMPTED = 75


ANNOUNCE_SIGINT = (b"mpi_gan: interrupted (SIGINT): the run stops with a checkpoint at its "
                   b"next iteration (after set-up, if it is still setting up); Ctrl-C again, "
                   b"a second later, stops it at once, without one\n")


class StopFlag:
    """The stop signals' flag on this rank; ``install`` sets the handlers, ``restore``
    puts the previous ones back. ``announce`` (rank 0): the first Ctrl-C says at once, in
    one line, what will happen (set-up can take minutes before the run can stop)."""

    def __init__(self, clock=time.monotonic, announce: bool = False):
        self.signal = 0
        self.announce = announce
        self._previous: dict[int, object] = {}
        self._clock, self._first_sigint = clock, None

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if signum == signal.SIGINT:
            now = self._clock()
            if self._first_sigint is not None and \
                    now - self._first_sigint >= REPEAT_SIGINT_SECONDS:
                self.interrupt_now()
            if self._first_sigint is None:
                self._first_sigint = now
                if self.announce and not self.signal:
                    with contextlib.suppress(OSError):
                        os.write(2, ANNOUNCE_SIGINT)
        self.signal = self.signal or int(signum)

    @staticmethod
    def interrupt_now() -> None:
        """A second Ctrl-C: leave at once, without a checkpoint (the launcher ends the
        other ranks); one line, written without Python's buffers."""
        with contextlib.suppress(OSError):
            os.write(2, b"mpi_gan: interrupted twice (SIGINT): stopping now, without a "
                        b"checkpoint; --resume auto continues from the last one\n")
        os._exit(EXIT_INTERRUPTED)

    def install(self) -> StopFlag:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def requeue_command(signum: int, advanced: bool, environ=os.environ) -> list[str] | None:
    """The command that requeues this SLURM job after stopping on ``signum``, or None:
    not under SLURM, a signal that is not a warning (SIGTERM), or no progress made."""
    job = environ.get("SLURM_JOB_ID")
    if not job or signum not in REQUEUE_SIGNALS or not advanced:
        return None
    return ["scontrol", "requeue", job]


REQUEUE_FILE = "MPI_GAN_REQUEUE_FILE"


def requeue(command: list[str], log, environ=os.environ) -> None:
    """Requeue the job: write ``command`` to the file named by ``MPI_GAN_REQUEUE_FILE`` if
    that is set (jobs/lib.sh sets it and runs the command once the job step has ended),
    else run it (``scontrol requeue JOB``). Log, never raise, if it fails: the checkpoint
    is written, so the user can resubmit by hand."""
    path = environ.get(REQUEUE_FILE)
    if path:
        try:
            with open(path, "w") as f:
                f.write(" ".join(command) + "\n")
            log.info("requeue left to the batch script: %s", " ".join(command))
        except OSError as exc:
            log.error("could not write %s (%s); resubmit the job to continue", path, exc)
        return
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        log.error("could not requeue (%s): %s; resubmit the job to continue", " ".join(command),
                  exc)
        return
    if done.returncode != 0:
        log.error("could not requeue (%s, status %d): %s; resubmit the job to continue",
                  " ".join(command), done.returncode, done.stderr.strip())
    else:
        log.info("requeued: %s", " ".join(command))
