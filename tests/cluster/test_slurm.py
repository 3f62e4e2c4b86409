"""jobs/ on a real SLURM cluster on localhost (tests/cluster/slurm/): every batch script through
``sbatch``, a sweep, and preempted jobs that requeue, resume and end bit-identical to an
uninterrupted one. Skipped where SLURM and munge are not installed (``.ci/run``
installs them); the cluster is shut down at the end, also when a test fails."""
import os
import re

import h5py
import numpy as np
import pytest

from tests.cluster.slurm.cluster import LocalCluster, missing
from tests.conftest import FAST, PYTHON, REPO, all_params, wait_for_checkpoint

GAN_ARGS = " ".join(FAST[2:])  # test_cli's small runs; DATASET=synthetic sets the dataset
ASGD_ARGS = "--synthetic-size 400 --eval-size 200 --eval-every 1000000 --log-every 1000 --seed 2"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = missing()
    if why:
        pytest.skip(why)
    local = LocalCluster(str(tmp_path_factory.mktemp("slurm"))).start()
    try:
        yield local
    finally:
        local.stop()


def job_env(runs, **extra):
    """The jobs' environment: this checkout and venv, small runs on synthetic data."""
    return {"MPI_GAN_HOME": REPO, "VENV": os.path.dirname(os.path.dirname(PYTHON)),
            "RUNS": str(runs), "DATASET": "synthetic", "ITERATIONS": "20",
            "CHECKPOINT_EVERY": "10", "ARGS": GAN_ARGS, "PYTHONUNBUFFERED": "1", **extra}


def submit(cluster, tmp_path, script, ntasks=3, **env):
    return cluster.submit(f"--chdir={tmp_path}", f"--ntasks={ntasks}", f"{REPO}/jobs/{script}",
                          env=job_env(tmp_path / "runs", **env))


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


@pytest.mark.timeout(900)
def test_every_job_script_runs_under_sbatch(cluster, tmp_path):
    """mdgan, flgan, asgd (srun --mpi=pmi2) and mdgan through the venv's mpiexec, side by
    side; then the GPU scripts are accepted by sbatch's parser (``--test-only``: this
    cluster has no GPU)."""
    jobs = [(submit(cluster, tmp_path, "mdgan.sbatch"), "mdgan", 20),
            (submit(cluster, tmp_path, "flgan.sbatch"), "flgan", 20),
            (submit(cluster, tmp_path, "asgd.sbatch", ITERATIONS="60", ARGS=ASGD_ARGS,
                    CHECKPOINT_EVERY="30"), "asgd", 60),
            (submit(cluster, tmp_path, "mdgan.sbatch", LAUNCHER="mpiexec"), "mdgan", 20)]
    for job, name, iterations in jobs:
        _, log, _ = finished(cluster, tmp_path, job, name, iterations)
        assert "done: run file" in log
    assert "srun --mpi=pmi2" in (tmp_path / f"mdgan-{jobs[0][0]}.out").read_text()
    assert "bin/mpiexec -n 3" in (tmp_path / f"mdgan-{jobs[3][0]}.out").read_text()
    assert "final test accuracy" in (tmp_path / f"asgd-{jobs[2][0]}.out").read_text()
    for script in ("mdgan-gpu.sbatch", "flgan-gpu.sbatch", "asgd-gpu.sbatch"):
        proc = cluster.run("sbatch", "--test-only", f"{REPO}/jobs/{script}", check=False)
        assert "gpu" in proc.stderr.lower() or "gres" in proc.stderr.lower(), proc.stderr


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


@pytest.mark.timeout(1200)
def test_preempted_jobs_requeue_resume_and_match_an_uninterrupted_one(cluster, tmp_path):
    """Three identical MD-GAN jobs: one warned with USR1 (``scancel --signal=USR1 --batch``,
    as ``--signal=B:USR1@...`` does): it checkpoints, rank 0 requeues it; one requeued by
    ``scontrol requeue`` (SLURM's SIGTERM): it checkpoints and SLURM requeues it; one left
    alone. All three end with the same parameters, bit for bit. The two signalled jobs are
    submitted one after the other, each signalled once it has a checkpoint (never waiting
    for one file: older checkpoints are pruned while a test waits)."""
    settings = {"ITERATIONS": "600"}
    alone = submit(cluster, tmp_path, "mdgan.sbatch", **settings)
    runs = tmp_path / "runs"
    signalled = []
    for action in (("scancel", "--signal=USR1", "--batch"), ("scontrol", "requeue")):
        # one at a time, each signalled soon after its first checkpoint: hundreds of
        # iterations before its end, whatever the load and the others' start-up skew
        job = submit(cluster, tmp_path, "mdgan.sbatch", **settings)
        wait_for_checkpoint(runs / f"mdgan-{job}", 10, running(cluster, tmp_path, job),
                            poll=0.2)
        cluster.run(*action, str(job))
        signalled.append(job)
    warned, requeued = signalled
    finals = {}
    for job, signal_name in ((warned, "SIGUSR1"), (requeued, "SIGTERM"), (alone, None)):
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
        else:
            assert info["Restarts"] == "0" and "stopped by" not in log
        finals[job] = all_params(runs / f"mdgan-{job}" / "checkpoints" / "ckpt_00000600.h5")
    reference = finals[alone]
    for job in (warned, requeued):
        assert finals[job].keys() == reference.keys()
        for key in reference:
            assert np.array_equal(finals[job][key], reference[key]), (job, key)
