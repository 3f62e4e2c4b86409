"""A real SLURM cluster on this machine for the tests: munged, slurmctld, one slurmd per node.

The nodes are either ``localhost`` alone or the hosts of a ``NamespaceHosts``
(tests/cluster/hosts.py): then every slurmd runs in its own host's network namespace,
under the host's name, at the host's address, and slurmctld runs on the first host, as
on a small real cluster; the SLURM commands are run there too (``run``), and the jobs'
tasks run on the node SLURM places them on, in that node's namespace, talking to the
others over the hosts' bridge. munged is shared (its socket is a file, reachable from
every namespace).

Everything lives in one temporary directory (configuration, munge key and socket,
state, per-node spools, logs, pids) and reaches the SLURM commands through
``SLURM_CONF``, so /etc/slurm is never touched. ``LocalCluster.stop`` shuts it down
cleanly (``scontrol shutdown``, ``munged --stop``) and kills what is left.

Needs Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them) and root.
"""
from __future__ import annotations

import contextlib
import os
import shlex
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


def _cgroup_mounts() -> str:
    """Shell commands that mount, in a mount namespace whose /sys is fresh (``ip netns
    exec``), the cgroup file systems this process sees under /sys/fs/cgroup (the same
    hierarchies: a cgroup v1 mount with the same controllers or name attaches to the
    existing one)."""
    commands = []
    with open("/proc/self/mounts") as f:
        for line in f:
            source, target, fstype, options = line.split()[:4]
            if target == "/sys/fs/cgroup" or target.startswith("/sys/fs/cgroup/"):
                commands.append(f"mkdir -p {target} && mount -t {fstype} -o {options} "
                                f"{source} {target}")
    return " && ".join(commands) or "true"


def _which(name: str) -> str:
    return shutil.which(name, path=os.environ["PATH"] + ":/usr/sbin:/sbin")


class LocalCluster:
    """``start()`` the daemons under ``state`` (a fresh directory); ``run`` a SLURM command
    against them; ``stop()`` them. With ``hosts`` (a ``NamespaceHosts`` that is up), one
    node per host; without, the single node ``localhost``. ``partitions`` maps each
    partition's name to its nodes (the first is the default; unset: ``debug``, every
    node). ``hidden`` maps a node to directories its slurmd and jobs do not see (an
    empty file system is mounted over each, in the node's own mount namespace): a node
    that lacks, say, the venv that the others share."""

    def __init__(self, state: str, hosts=None, cpus_per_node: int = 12,
                 partitions: dict[str, list[str]] | None = None,
                 hidden: dict[str, list[str]] | None = None):
        self.state = os.path.abspath(state)
        self.conf = os.path.join(self.state, "slurm.conf")
        self.socket = os.path.join(self.state, "munge.socket")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self.hosts = hosts
        self.cpus_per_node = cpus_per_node
        self.nodes = list(hosts.names) if hosts else ["localhost"]
        self.partitions = partitions or {"debug": self.nodes}
        self.hidden = hidden or {}
        assert not self.hidden or hosts, "hiding directories needs namespace hosts"

    def address(self, node: str) -> str:
        return self.hosts.address(node) if self.hosts else "127.0.0.1"

    def on(self, node: str, argv: list[str]) -> list[str]:
        """``argv`` as run on ``node`` (in its namespace, under its name)."""
        return self.hosts.command_on(node, argv) if self.hosts else argv

    def run(self, *args, check=True, timeout=60, **kw) -> subprocess.CompletedProcess:
        """Run a command (a SLURM command, found on the daemons' PATH) on the first node."""
        argv = self.on(self.nodes[0], [_which(args[0]) or args[0], *args[1:]])
        proc = subprocess.run(argv, capture_output=True, text=True,
                              env=kw.pop("env", self.env), timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr}\n"
                               + self.logs())
        return proc

    def start(self, timeout: float = 60) -> LocalCluster:
        os.makedirs(self.state, mode=0o700, exist_ok=True)
        for sub in ("state", *(f"spool-{node}" for node in self.nodes)):
            os.makedirs(os.path.join(self.state, sub), exist_ok=True)
        with open(os.path.join(HERE, "slurm.conf.in")) as f:
            text = f.read()
        # job ids unique to this cluster: a job never shares its id (and so MPICH's names
        # derived from it) with a job of another cluster started on this machine
        first_job = 100 + (os.getpid() * 7919 + int(time.time())) % 50_000_000
        text = text.replace("@FIRST_JOB_ID@", str(first_job))
        cpus = self.cpus_per_node
        nodes = "\n".join(
            f"NodeName={node} NodeAddr={self.address(node)} CPUs={cpus} Boards=1 "
            f"SocketsPerBoard=1 CoresPerSocket={cpus} ThreadsPerCore=1 RealMemory=4000"
            for node in self.nodes)
        text = text.replace("@CONTROLLER@", f"{self.nodes[0]}({self.address(self.nodes[0])})")
        partitions = "\n".join(
            f"PartitionName={name} Nodes={','.join(members)} Default={'NO' if i else 'YES'} "
            "MaxTime=INFINITE State=UP"
            for i, (name, members) in enumerate(self.partitions.items()))
        text = text.replace("@NODES@", nodes).replace("@PARTITIONS@", partitions)
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
        for node in self.nodes:
            self._start_slurmd(node)
        deadline = time.monotonic() + timeout
        while True:
            states = self.run("sinfo", "-h", "-N", "-o", "%N %T", check=False).stdout.split()
            if set(states[0::2]) == set(self.nodes) and set(states[1::2]) == {"idle"}:
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the local SLURM nodes are {states}, not all idle, "
                                   f"after {timeout} s\n" + self.logs())
            time.sleep(0.2)

    def _start_slurmd(self, node: str) -> None:
        argv = [_which("slurmd"), "-N", node]
        if self.hosts:
            # ``ip netns exec`` mounts a fresh /sys, with nothing on /sys/fs/cgroup, where
            # slurmd's cgroup plugin looks at start: mount there what this machine has
            mounts = [_cgroup_mounts(), *(f"mount -t tmpfs hidden {shlex.quote(path)}"
                                          for path in self.hidden.get(node, ()))]
            argv = ["sh", "-c", f'{" && ".join(mounts)} && exec "$@"', "sh", *argv]
        argv = self.on(node, argv)
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"slurmd on {node} failed ({proc.returncode}): {proc.stderr}\n"
                               + self.logs())

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
        for name in ("slurmctld.log", *(f"slurmd-{n}.log" for n in self.nodes), "munged.log"):
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

