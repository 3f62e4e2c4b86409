"""A real single-node SLURM cluster on localhost for the tests: munged, slurmctld, slurmd.

Everything lives in one temporary directory (configuration, munge key and socket,
state, spool, logs, pids) and reaches the SLURM commands through ``SLURM_CONF``, so
/etc/slurm is never touched. ``LocalCluster.stop`` shuts it down cleanly
(``scontrol shutdown``, ``munged --stop``) and kills what is left.

Needs Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them) and root.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "squeue", "scontrol", "sinfo", "scancel", "srun")


def missing() -> str | None:
    """Why no cluster can be started here (None if one can)."""
    absent = [c for c in (*DAEMONS, *COMMANDS) if shutil.which(c, path=os.environ["PATH"] +
                                                                ":/usr/sbin:/sbin") is None]
    if absent:
        return f"SLURM/munge not installed ({', '.join(absent)} missing): apt-get install " \
               "slurm-wlm munge"
    if os.geteuid() != 0:
        return "the local SLURM cluster runs its daemons as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str:
    return shutil.which(name, path=os.environ["PATH"] + ":/usr/sbin:/sbin")


class LocalCluster:
    """``start()`` the daemons under ``state`` (a fresh directory); ``run`` a SLURM command
    against them; ``stop()`` them."""

    def __init__(self, state: str):
        self.state = os.path.abspath(state)
        self.conf = os.path.join(self.state, "slurm.conf")
        self.socket = os.path.join(self.state, "munge.socket")
        self.env = dict(os.environ, SLURM_CONF=self.conf)

    def run(self, *args, check=True, timeout=60, **kw) -> subprocess.CompletedProcess:
        proc = subprocess.run([_which(args[0]), *args[1:]], capture_output=True, text=True,
                              env=kw.pop("env", self.env), timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr}\n"
                               + self.logs())
        return proc

    def start(self, timeout: float = 60) -> LocalCluster:
        os.makedirs(self.state, mode=0o700, exist_ok=True)
        for sub in ("state", "spool"):
            os.makedirs(os.path.join(self.state, sub), exist_ok=True)
        with open(os.path.join(HERE, "slurm.conf.in")) as f:
            text = f.read()
        # job ids unique to this cluster: a job never shares its id (and so MPICH's names
        # derived from it) with a job of another cluster started on this machine
        first_job = 100 + (os.getpid() * 7919 + int(time.time())) % 50_000_000
        text = text.replace("@FIRST_JOB_ID@", str(first_job))
        text = text.replace("@STATE@", self.state).replace(
            "@CTLD_PORT@", str(_free_port())).replace("@SLURMD_PORT@", str(_free_port()))
        with open(self.conf, "w") as f:
            f.write(text)
        key = os.path.join(self.state, "munge.key")
        if os.path.exists("/etc/munge/munge.key"):
            shutil.copyfile("/etc/munge/munge.key", key)
        else:
            with open(key, "wb") as f:
                f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        self.run("munged", "-f", f"--socket={self.socket}", f"--key-file={key}",
                 f"--log-file={self.state}/munged.log", f"--pid-file={self.state}/munged.pid",
                 f"--seed-file={self.state}/munged.seed")
        self.run("slurmctld", "-i")
        self.run("slurmd", "-N", "localhost")
        deadline = time.monotonic() + timeout
        while True:
            state = self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
            if state == "idle":
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the local SLURM node is {state!r}, not idle, after "
                                   f"{timeout} s\n" + self.logs())
            time.sleep(0.2)

    def stop(self) -> None:
        """Cancel every job and let the queue drain (30 s at most), shut the daemons down,
        then kill every process still carrying this cluster's ``SLURM_CONF`` (daemons,
        slurmstepd, job tasks): nothing of it may outlive the tests, or a later cluster's
        job of the same id could meet it."""
        self.run("scancel", "--user", "root", check=False)
        deadline = time.monotonic() + 30
        while self.run("squeue", "-h", check=False).stdout.strip() and \
                time.monotonic() < deadline:
            time.sleep(0.5)
        self.run("scontrol", "shutdown", check=False)
        self.run("munged", "--stop", f"--socket={self.socket}", check=False)
        deadline = time.monotonic() + 20
        while self._leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in self._leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _leftovers(self) -> list[int]:
        """Processes (not this one) whose environment holds ``SLURM_CONF`` of this cluster."""
        marker = f"SLURM_CONF={self.conf}".encode()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        pids.append(int(entry))
            except OSError:
                continue
        return pids

    def logs(self) -> str:
        """The daemons' logs' last lines (for failure messages)."""
        text = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = os.path.join(self.state, name)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    text.append(f"--- {name}\n" + "".join(f.readlines()[-15:]))
        return "\n".join(text)

    # ------------------------------------------------------------- jobs
    def submit(self, *args, env=None) -> int:
        """``sbatch --parsable ARGS``; returns the job id."""
        proc = self.run("sbatch", "--parsable", *args, env=dict(self.env, **(env or {})))
        return int(proc.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """``scontrol show job``'s fields (JobState, ExitCode, Restarts, ...)."""
        text = self.run("scontrol", "show", "job", str(job_id), "-o").stdout
        return dict(f.split("=", 1) for f in text.split() if "=" in f)

    def wait(self, job_id: int, timeout: float, states=("COMPLETED", "FAILED", "CANCELLED",
                                                        "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                                                        "PREEMPTED", "BOOT_FAIL")) -> dict:
        """Wait until the job is in one of ``states``; its fields."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {info.get('JobState')} after "
                                   f"{timeout} s: {info}")
            time.sleep(0.5)

