"""Several hosts on one machine for the multi-host tests: Linux network namespaces.

``NamespaceHosts(count)`` creates a switch namespace holding a bridge and one namespace
per host (``<prefix>-h1`` ...), each joined to the bridge by a veth pair, with the
address ``198.18.<net>.<i>/24`` on its ``eth0`` (198.18.0.0/15 is reserved for
benchmarks: nothing outside answers it) and loopback up. Nothing is added to the
machine's own namespace, so traffic goes only between these hosts. Each host has a
name of its own: ``run_on`` enters its network namespace and a fresh UTS namespace
whose hostname is the host's (``h1`` ...), and ``ip netns exec`` bind-mounts
``/etc/netns/<namespace>/hosts`` over /etc/hosts, so every host resolves the others
by name.

``launcher`` writes the script that MPICH's hydra (``-launcher ssh -launcher-exec``)
and Open MPI (``--mca plm_rsh_agent``) call in place of ssh: it skips ssh's options,
maps the host name to its namespace and runs the command there. ``down`` removes every
namespace, the veths go with them, and the ``/etc/netns`` folders; namespaces left by
an earlier run that was killed are removed by the next ``up`` (by their prefix).

Needs root and iproute2 (``ip``) and util-linux (``unshare``).
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess

PREFIX = "mpigan"
NETNS_ETC = "/etc/netns"


@functools.lru_cache(maxsize=1)
def missing() -> str | None:
    """Why no namespace hosts can be made here (None if they can)."""
    for tool in ("ip", "unshare"):
        if shutil.which(tool, path=os.environ["PATH"] + ":/usr/sbin:/sbin") is None:
            return f"{tool} is not installed (apt-get install iproute2 util-linux)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"{PREFIX}-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ip(*args: str, namespace: str | None = None) -> None:
    """Run ``ip ARGS`` (inside ``namespace`` if given); CalledProcessError names the
    command and its stderr."""
    command = ["ip", *(["-n", namespace] if namespace else []), *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, command, proc.stdout, proc.stderr)


def namespaces(prefix: str = PREFIX) -> list[str]:
    """The network namespaces whose name starts with ``prefix-``."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listed.splitlines()
            if line.split() and line.split()[0].startswith(prefix + "-")]


def kill_processes(prefix: str = PREFIX) -> None:
    """SIGKILL every process left in a namespace of ``prefix`` (ranks and launcher
    daemons of a run that failed or hung); never raises."""
    for name in namespaces(prefix):
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                              text=True).stdout.split()
        for pid in pids:
            subprocess.run(["kill", "-9", pid], capture_output=True)


def remove_all(prefix: str = PREFIX) -> None:
    """Remove every namespace of ``prefix`` (their veths and bridge go with them, after
    the processes left in them) and their /etc/netns folders; never raises."""
    kill_processes(prefix)
    for name in namespaces(prefix):
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    if os.path.isdir(NETNS_ETC):
        for name in os.listdir(NETNS_ETC):
            if name.startswith(prefix + "-"):
                shutil.rmtree(os.path.join(NETNS_ETC, name), ignore_errors=True)


class NamespaceHosts:
    """``count`` hosts ``h1``..``hN`` joined by a bridge; ``up()`` makes them, ``down()``
    removes them (also usable as a context manager)."""

    def __init__(self, count: int, net: int = 0, prefix: str = PREFIX):
        assert 2 <= count <= 8 and 0 <= net <= 255
        self.count, self.net, self.prefix = count, net, prefix
        self.names = [f"h{i}" for i in range(1, count + 1)]
        self.switch = f"{prefix}-switch"

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def address(self, host: str) -> str:
        return f"198.18.{self.net}.{self.names.index(host) + 1}"

    def up(self) -> "NamespaceHosts":
        remove_all(self.prefix)  # what a killed earlier run left
        try:
            ip("netns", "add", self.switch)
            ip("link", "add", "br0", "type", "bridge", namespace=self.switch)
            ip("link", "set", "br0", "up", namespace=self.switch)
            hosts_file = "127.0.0.1 localhost\n" + "".join(
                f"{self.address(h)} {h}\n" for h in self.names)
            for i, host in enumerate(self.names, 1):
                ns = self.namespace(host)
                ip("netns", "add", ns)
                ip("link", "add", f"veth{i}", "netns", self.switch, "type", "veth", "peer",
                   "name", "eth0", "netns", ns)
                ip("link", "set", f"veth{i}", "master", "br0", "up", namespace=self.switch)
                ip("addr", "add", f"{self.address(host)}/24", "dev", "eth0", namespace=ns)
                ip("link", "set", "eth0", "up", namespace=ns)
                ip("link", "set", "lo", "up", namespace=ns)
                os.makedirs(os.path.join(NETNS_ETC, ns), exist_ok=True)
                with open(os.path.join(NETNS_ETC, ns, "hosts"), "w") as f:
                    f.write(hosts_file)
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        remove_all(self.prefix)

    def __enter__(self) -> "NamespaceHosts":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    def command_on(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` as run on ``host``: in its network namespace, under its hostname."""
        return ["ip", "netns", "exec", self.namespace(host), "unshare", "--uts", "sh", "-c",
                f'hostname {host} && exec "$@"', "sh", *argv]

    def run_on(self, host: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.command_on(host, argv), **kwargs)

    def launcher(self, path: str) -> str:
        """Write the ssh stand-in that MPI launchers call (``ssh [options] HOST COMMAND``)
        to ``path`` (executable); returns ``path``. A name it does not know it refuses as
        ssh does (a message, status 255) and appends to ``path``.unknown: the launcher
        may stop reading the message once its launch failed."""
        cases = "".join(f"  {h}|{self.address(h)}) ns={self.namespace(h)} name={h} ;;\n"
                        for h in self.names)
        script = f"""#!/bin/sh
# ssh stand-in of the multi-host tests: ssh [options] HOST COMMAND... -> COMMAND run in
# HOST's network namespace, under HOST's name (tests/cluster/hosts.py)
while [ $# -gt 0 ]; do
  case "$1" in
    -o|-p|-l|-i|-F) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
host=$1; shift
case "$host" in
{cases}  *) echo "$host" >> "$0.unknown"; echo "no such test host: $host" >&2; exit 255 ;;
esac
exec ip netns exec "$ns" unshare --uts sh -c "hostname $name && $*"
"""
        with open(path, "w") as f:
            f.write(script)
        os.chmod(path, 0o755)
        return path
