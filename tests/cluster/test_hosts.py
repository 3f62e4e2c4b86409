"""MPI across hosts: two network-namespace hosts on this machine (``hosts.py``), each with
its own hostname and address, joined by a bridge; MPICH's hydra launches through an ssh
stand-in that enters a host's namespace. A run across the two hosts (2 ranks on each) must
end bit-identical to the same run on one host, with the same traffic counters, and its run
file must say which rank ran where."""
import os
import subprocess

import h5py
import numpy as np
import pytest

from tests.cluster.hosts import NamespaceHosts, missing
from tests.conftest import FAST, MPIEXEC, PYTHON, all_params, mpirun

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    with NamespaceHosts(2) as made:
        made.ssh = made.launcher(str(tmp_path_factory.mktemp("hosts") / "ssh"))
        yield made


def across(hosts, tmp_path, per_host: int, args: list[str], timeout=300):
    """``python -m ARGS`` on every host, ``per_host`` ranks on each, launched from h1 by
    MPICH's mpiexec with the ssh stand-in."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("".join(f"{h}:{per_host}\n" for h in hosts.names))
    command = hosts.command_on("h1", [
        MPIEXEC, "-f", str(hostfile), "-launcher", "ssh", "-launcher-exec", hosts.ssh,
        "-n", str(per_host * len(hosts.names)), PYTHON, "-m", *args])
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, PYTHONUNBUFFERED="1"))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{command} hung for {timeout} s:\n{exc.stdout}\n{exc.stderr}")


def test_mdgan_across_two_hosts_equals_one_host(hosts, tmp_path):
    args = ["mpi_gan.mdgan", *FAST, "--iterations", "8", "--checkpoint-every", "4",
            "--compress", "topk:ratio=0.1"]
    one = mpirun(4, [*args, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = across(hosts, tmp_path, 2, [*args, "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr
    name = "checkpoints/ckpt_00000008.h5"
    a, b = all_params(tmp_path / "one" / name), all_params(tmp_path / "two" / name)
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    with h5py.File(tmp_path / "one" / "run.h5", "r") as f1, \
            h5py.File(tmp_path / "two" / "run.h5", "r") as f2:
        for kind in f1["traffic/kinds"]:
            for what in ("bytes", "messages"):
                path = f"traffic/kinds/{kind}/{what}"
                assert np.array_equal(f1[path][()], f2[path][()]), path
        assert [h.decode() for h in f2["ranks/host"][()]] == ["h1", "h1", "h2", "h2"]
        assert len(set(f1["ranks/host"][()])) == 1
