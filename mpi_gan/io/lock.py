"""Lock files that work across hosts: one job per run directory (``RunLock``,
``<out>/run.lock``, held by rank 0 for the whole job), and one builder per shared cache
file (``building``: ``<file>.lock`` while a dataset or score-classifier cache is written,
the other processes waiting for it). What follows is told of the run lock; a build lock
works the same way (``FileLock``), its waiters polling instead of being refused.

Taken by creating the file with ``O_CREAT | O_EXCL`` (atomic on local filesystems and on
NFS v3 and later, unlike ``flock``), it records who holds it, one ``key=value`` a line:
host, machine (``machine_id``: tells apart hosts that share a hostname), pid, start (UTC,
ISO 8601), slurm_job and slurm_restart (SLURM_JOB_ID and
SLURM_RESTART_COUNT, empty outside SLURM). While the job lives a daemon thread refreshes
the file's modification time every ``HEARTBEAT_SECONDS``, after checking the file is still
the one it wrote (its holder fields; inode numbers are reused at once): a job whose heartbeat stalled past ``STALE_SECONDS`` (a
suspended process, a hung filesystem) may have lost the lock to another job, and then
``lost`` says so and the job stops before writing: the run directory's writers
(``RunFile``, ``write_checkpoint``) call ``ensure_held`` first. The job removes the lock
when it ends (a crash or SIGKILL leaves it behind).

A second job that finds the lock is refused (``LockError``, naming the holder), unless the
lock is stale, and then takes it over and says why:
  * its holder ran on this host (hostname and machine id) and its process is gone;
  * it belongs to this SLURM job before a requeue (same job id, lower restart count);
  * its heartbeat is older than ``STALE_SECONDS`` (a holder on another host that died).
A takeover renames the stale file aside and checks it is the file it judged (its inode):
if another taker's live lock was renamed instead, it is put back, so one taker wins.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import functools
import hashlib
import os
import socket
import threading
import time

LOCK_NAME = "run.lock"
WAIT_LINE_SECONDS = 60.0  # a process waiting for a builder says so this often
HEARTBEAT_SECONDS = 15.0
STALE_SECONDS = 120.0


class LockError(RuntimeError):
    """``--out`` is held by another live job."""


class LockRefused(OSError):
    """The lock file cannot be made where it belongs: the directory is read-only, not
    ours, or gone (``REFUSED``); not a lock held by someone else."""


REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR)


class LockLost(LockError):
    """This job lost ``--out``'s lock while it ran: it must write nothing more there."""


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


@functools.lru_cache(maxsize=1)
def machine_id() -> str:
    """What tells this kernel and process-id space apart from another with the same
    hostname (cloned nodes, containers): 12 hex digits of a digest of the kernel's boot id
    and this process's pid namespace; "" where neither can be read. Only where hostname and
    machine id both match is a holder's pid looked up here."""
    parts = []
    with contextlib.suppress(OSError):
        with open("/proc/sys/kernel/random/boot_id") as f:
            parts.append(f.read().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return hashlib.blake2b("/".join(parts).encode(), digest_size=6).hexdigest() if parts else ""


def this_host() -> str:
    """This host as temporary file names record it: ``<hostname>~<machine_id>``."""
    machine = machine_id()
    return f"{socket.gethostname()}~{machine}" if machine else socket.gethostname()


def same_host(host: str | None, machine: str | None) -> bool:
    """Whether a process recorded with ``host`` and ``machine`` (None: a record older than
    machine ids, judged by its hostname) ran in this kernel and pid space."""
    return host == socket.gethostname() and machine in (None, machine_id())


def parse_host(text: str) -> tuple[str, str | None]:
    """(hostname, machine id or None) of a ``this_host`` record (None: an older record,
    the hostname alone)."""
    hostname, tilde, machine = text.rpartition("~")
    return (hostname, machine) if tilde else (text, None)


def this_holder() -> dict[str, str]:
    """The fields this process writes into a lock it takes."""
    return {"host": socket.gethostname(), "machine": machine_id(), "pid": str(os.getpid()),
            "start": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "slurm_job": os.environ.get("SLURM_JOB_ID", ""),
            "slurm_restart": os.environ.get("SLURM_RESTART_COUNT", "0")}


def read_holder(path: str) -> dict[str, str]:
    """A lock file's fields ({} if it is empty or unreadable: a holder mid-write)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line)


def read_judged(path: str) -> tuple[dict[str, str], os.stat_result]:
    """A lock file's fields and its status, both of the file one open found (a file
    replaced meanwhile is not judged by its predecessor's fields); FileNotFoundError if
    there is none."""
    with open(path) as f:
        status = os.fstat(f.fileno())
        lines = f.read().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line), status


def describe(holder: dict[str, str]) -> str:
    """The holder in words, for messages."""
    if not holder:
        return "a job that left no details"
    text = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since " \
           f"{holder.get('start', '?')}"
    if holder.get("slurm_job"):
        text += f" (SLURM job {holder['slurm_job']})"
    return text


def stale_reason(holder: dict[str, str], age: float) -> str | None:
    """Why the lock of ``holder`` (heartbeat ``age`` seconds ago) is stale, or None if its
    job may still live."""
    host, pid = holder.get("host"), holder.get("pid", "")
    if same_host(host, holder.get("machine")) and pid.isdigit() and \
            not process_alive(int(pid)):
        return f"its process {pid} on this host is gone"
    job = os.environ.get("SLURM_JOB_ID", "")
    if job and holder.get("slurm_job") == job:
        try:
            earlier = int(holder.get("slurm_restart", "0")) < int(
                os.environ.get("SLURM_RESTART_COUNT", "0"))
        except ValueError:
            earlier = False
        if earlier:
            return f"it is this SLURM job's ({job}) before its requeue"
    if age > STALE_SECONDS:
        return f"its heartbeat stopped {age:.0f} s ago (more than {STALE_SECONDS:.0f} s)"
    return None


class FileLock:
    """A lock file at ``path``, held by one process at a time; ``acquire`` it, ``release``
    it at the end."""

    def __init__(self, path: str):
        self.path = path
        self.held = False
        self.lost = ""  # why the lock is no longer this job's ("" while it is)
        self._holder: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, log=print) -> None:
        """Take the lock, taking over a stale one (``log`` says so); LockError if another
        live job holds it."""
        for _ in range(3):  # a takeover raced by another job: look again
            if self._create():
                break
            try:  # the holder and the inode judged, read from one open of the file
                holder, judged = read_judged(self.path)
            except FileNotFoundError:
                continue  # released meanwhile
            age = time.time() - judged.st_mtime
            reason = stale_reason(holder, age) if holder else (
                f"it is empty and {age:.0f} s old" if age > STALE_SECONDS else None)
            if reason is None:
                stale_at = datetime.datetime.fromtimestamp(
                    judged.st_mtime + STALE_SECONDS, datetime.timezone.utc)
                raise LockError(self.busy(holder, stale_at.isoformat(timespec="seconds")))
            aside = f"{self.path}.stale-{os.getpid()}"
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                continue
            if os.stat(aside).st_ino != judged.st_ino:
                # another taker replaced the stale lock by its own live one meanwhile: put
                # it back (unless a third has taken the name) and look again
                with contextlib.suppress(OSError):
                    os.link(aside, self.path)
                os.unlink(aside)
                continue
            os.unlink(aside)
            log(f"took over the stale lock {self.path} of {describe(holder)}: {reason}")
        else:
            raise LockError(f"cannot take the lock {self.path}: other jobs keep taking it")
        self.held = True
        self._thread = threading.Thread(target=self._beat, name="lock-heartbeat",
                                        daemon=True)
        self._thread.start()

    def busy(self, holder: dict[str, str], stale_at: str) -> str:
        """The message of the LockError that a live ``holder`` causes (its lock is stale
        at ``stale_at`` if its heartbeat stops)."""
        return (f"{self.path} is held by {describe(holder)} (taken over once its heartbeat "
                f"is {STALE_SECONDS:.0f} s old, at {stale_at})")

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno in REFUSED:
                raise LockRefused(exc.errno, exc.strerror, self.path) from exc
            raise
        holder = this_holder()
        try:
            with os.fdopen(fd, "w") as f:
                f.write("".join(f"{k}={v}\n" for k, v in holder.items()))
                f.flush()
                os.fsync(f.fileno())
        except BaseException:  # a full disk: an empty lock would stall every other job
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            raise
        self._holder = holder
        return True

    def check(self) -> str:
        """Why this job no longer holds the lock ("" if it does): the file is gone, or is
        another job's (taken over after this job's heartbeat stalled)."""
        if self.held and not self.lost:
            if self._gone():
                self.lost = f"its lock {self.path} was removed while it ran"
                return self.lost
            holder = read_holder(self.path)
            if holder and holder != self._holder:  # ({}: unreadable now, or mid-write)
                self.lost = (f"its lock {self.path} was taken over by another job, "
                             f"{describe(holder)}, which judged it stale (its heartbeat "
                             f"older than {STALE_SECONDS:.0f} s, or its process gone)")
        return self.lost

    def _gone(self, looks: int = 3, pause: float = 1.0) -> bool:
        """Whether the lock file is absent at ``looks`` looks ``pause`` seconds apart (a
        taker renames a lock aside for an instant; a filesystem error proves nothing)."""
        for look in range(looks):
            try:
                os.lstat(self.path)
                return False
            except FileNotFoundError:
                if look + 1 < looks:
                    time.sleep(pause)
            except OSError:
                return False
        return True

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            if self.check():
                return  # another job's lock now: never refresh it
            with contextlib.suppress(OSError):  # a full disk does not stop the run
                os.utime(self.path)

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if this process still holds it (best
        effort: never raises)."""
        if not self.held:
            return
        self.held = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            if not self.check() and read_holder(self.path).get("pid") == str(os.getpid()) \
                    and read_holder(self.path).get("host") == socket.gethostname():
                os.unlink(self.path)


class RunLock(FileLock):
    """The lock of one run directory, ``<out>/run.lock``."""

    def __init__(self, out: str):
        super().__init__(os.path.join(out, LOCK_NAME))

    def busy(self, holder: dict[str, str], stale_at: str) -> str:
        return (f"--out {os.path.dirname(self.path)!r} is in use by another job: "
                f"{describe(holder)} holds {self.path}; wait for it to end, or choose another "
                "--out (if that job is dead, its lock is taken over once its heartbeat is "
                f"{STALE_SECONDS:.0f} s old, at {stale_at})")


@contextlib.contextmanager
def building(path: str, log=print, poll: float = 0.2):
    """Hold ``<path>.lock`` while this process builds the shared file ``path`` (a dataset
    or score-classifier cache that jobs on several hosts may ask for at once). While
    another live process holds it, wait (``log`` says for whom, once a minute: there is
    no time limit, a conversion or a training may take long), polling every
    ``poll`` seconds; a stale one (its process gone from this host, or its heartbeat older
    than ``STALE_SECONDS``) is taken over. The builder re-checks ``path`` once it holds
    the lock (it may have been finished meanwhile) and moves the finished file into place
    atomically; the lock goes when the block ends, however it ends."""
    lock = FileLock(f"{path}.lock")
    said = -WAIT_LINE_SECONDS
    while True:
        try:
            lock.acquire(log)
            break
        except LockError:
            if time.monotonic() - said >= WAIT_LINE_SECONDS:  # once a minute while waiting
                log(f"waiting for {describe(read_holder(lock.path))} to finish {path}")
                said = time.monotonic()
            time.sleep(poll)
        except LockRefused as exc:  # not a busy lock: the directory refuses the lock file
            raise OSError(f"cannot write in {os.path.dirname(os.path.abspath(path))!r}, "
                          f"where {os.path.basename(path)} is to be built and shared "
                          f"({exc.strerror or exc}): make it writable, or choose another "
                          "with --cache-dir") from exc
    try:
        yield
    finally:
        lock.release()


_HELD: list[RunLock] = []  # the run directory locks this process took (rank 0: one)


def take(out: str, say) -> RunLock:
    """Take ``out``'s lock for this process (``say`` a takeover of a stale one); LockError
    if another live job holds it."""
    lock = RunLock(out)
    lock.acquire(say)
    _HELD.append(lock)
    return lock


def lost() -> str:
    """Why this process no longer holds a run directory's lock it took ("" if it holds
    them all, or took none)."""
    return next((why for why in (lock.check() for lock in _HELD) if why), "")


def ensure_held() -> None:
    """Before writing into a run directory: LockLost if this process lost its lock (a
    process that took none, such as a test or a script, passes)."""
    why = lost()
    if why:
        raise LockLost(f"this job stops without writing anything more: {why}; --out is "
                       "that job's now")


def release_all() -> None:
    """Give up every lock this process holds (best effort: never raises)."""
    while _HELD:
        lock = _HELD.pop()
        try:
            lock.release()
        except BaseException:  # noqa: BLE001 - on the abort path: MPI_Abort must follow
            pass
