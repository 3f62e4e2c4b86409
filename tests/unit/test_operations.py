"""Unit tests (no MPI) of the operational helpers: thread pools from --threads, stop
signals and the requeue decision, --resume auto, the full-disk error, the sweep's jobs."""
import errno
import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mpi_gan.comm.preemption import StopFlag, requeue_command
from mpi_gan.algorithms.mdgan.config import MdganConfig
from mpi_gan.io.atomic import DiskFullError, atomic_h5, disk_full_errors
from mpi_gan.io.checkpoint import CheckpointError, resolve_auto
from mpi_gan.thread_pools import POOL_VARIABLES, limit_threads, threads_from_argv
from tests.conftest import REPO



def test_threads_from_argv():
    assert threads_from_argv([]) is None
    assert threads_from_argv(["--threads", "4"]) == 4
    assert threads_from_argv(["--threads=3", "--k", "2"]) == 3
    assert threads_from_argv(["--threads", "2", "--threads", "5"]) == 5  # the last wins
    assert threads_from_argv(["--threads", "x"]) is None  # the parser reports it
    assert threads_from_argv(["--threads", "0"]) is None
    assert threads_from_argv(["--threads"]) is None


def test_limit_threads_sets_every_pool_and_keeps_a_users_choice():
    env = {}
    assert limit_threads([], env) == 1 and all(env[v] == "1" for v in POOL_VARIABLES)
    env = {"OMP_NUM_THREADS": "8"}
    limit_threads([], env)
    assert env["OMP_NUM_THREADS"] == "8" and env["MKL_NUM_THREADS"] == "1"
    limit_threads(["--threads", "2"], env)  # given explicitly: it wins
    assert all(env[v] == "2" for v in POOL_VARIABLES)


def test_entry_point_sets_pools_before_torch_is_imported():
    code = ("import runpy, sys, os; sys.argv = ['x', '--threads', '3', '--help'];\n"
            "try:\n    runpy.run_module('mpi_gan.mdgan', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('POOLS', os.environ['OMP_NUM_THREADS'], os.environ['MKL_NUM_THREADS'])")
    env = {k: v for k, v in os.environ.items() if k not in POOL_VARIABLES}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)
    assert "POOLS 3 3" in proc.stdout, proc.stderr


def test_stop_flag_records_the_first_signal_only_and_restores_handlers():
    before = signal.getsignal(signal.SIGUSR1)
    flag = StopFlag().install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.signal == signal.SIGUSR1
    finally:
        flag.restore()
    assert signal.getsignal(signal.SIGUSR1) == before


def test_ctrl_c_stops_like_sigterm_and_a_second_one_later_ends_at_once():
    """Real SIGINTs to this process, a fake clock: repeats within a second (a terminal's
    Ctrl-C reaches every rank directly and through mpiexec) only stop; one a second or
    more after the first interrupts at once."""
    now = [100.0]
    before = signal.getsignal(signal.SIGINT)  # Python's, or SIG_IGN in a background job
    flag = StopFlag(clock=lambda: now[0]).install()
    interrupted = []
    flag.interrupt_now = lambda: interrupted.append(now[0])
    try:
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: only the flag
        assert flag.signal == signal.SIGINT and not interrupted
        now[0] += 0.5
        os.kill(os.getpid(), signal.SIGINT)  # the same Ctrl-C, forwarded by mpiexec
        assert not interrupted
        now[0] += 1.0
        os.kill(os.getpid(), signal.SIGINT)  # the user's second Ctrl-C
        assert interrupted == [101.5]
    finally:
        flag.restore()
    assert signal.getsignal(signal.SIGINT) is before


def test_the_first_ctrl_c_says_at_once_what_happens_on_rank_0_only():
    code = ("import os, signal; from mpi_gan.comm.preemption import StopFlag; "
            "f = StopFlag(announce={}).install(); "
            "os.kill(os.getpid(), signal.SIGINT); os.kill(os.getpid(), signal.SIGINT); "
            "os.kill(os.getpid(), signal.SIGTERM); print(f.signal)")
    said = {}
    for announce in (True, False):
        proc = subprocess.run([sys.executable, "-c", code.format(announce)],
                              capture_output=True, text=True, timeout=60, cwd=REPO)
        assert proc.returncode == 0 and proc.stdout == f"{int(signal.SIGINT)}\n"
        said[announce] = proc.stderr
    assert said[False] == ""
    assert said[True].splitlines() == [
        "mpi_gan: interrupted (SIGINT): the run stops with a checkpoint at its next iteration "
        "(after set-up, if it is still setting up); Ctrl-C again, a second later, stops it "
        "at once, without one"]


def test_a_second_ctrl_c_leaves_with_one_line_and_status_130():
    code = ("import os, signal; from mpi_gan.comm.preemption import StopFlag; "
            "f = StopFlag(clock=iter([0.0, 5.0]).__next__).install(); "
            "os.kill(os.getpid(), signal.SIGINT); os.kill(os.getpid(), signal.SIGINT); "
            "print('not reached')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert proc.returncode == 130 and proc.stdout == ""
    assert proc.stderr.startswith("mpi_gan: interrupted twice (SIGINT): stopping now")
    assert len(proc.stderr.splitlines()) == 1


def test_dead_writers_temporary_files_are_removed_by_the_next_write(tmp_path):
    """Temporary files of a file: those of this host's dead processes (new and old names)
    go at the next write of the file; a live writer's, another host's (another hostname,
    or this hostname on another kernel or pid namespace) and other files' stay."""
    import socket

    from mpi_gan.io.lock import machine_id
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    name, dead, alive = socket.gethostname(), child.pid, os.getppid()  # not ours: we write
    host = f"{name}~{machine_id()}"
    path = tmp_path / "cache.h5"
    names = {"dead": f"cache.h5.tmp-{host}-{dead}", "old": f"cache.h5.tmp-{dead}",
             "older": f"cache.h5.tmp-{name}-{dead}",
             "alive": f"cache.h5.tmp-{host}-{alive}", "elsewhere": f"cache.h5.tmp-node7-{dead}",
             "clone": f"cache.h5.tmp-{name}~{'0' * 12}-{dead}",
             "other": f"other.h5.tmp-{host}-{dead}"}
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
    with atomic_h5(str(path)) as f:
        f["x"] = np.arange(3)
        writing = [p.name for p in tmp_path.iterdir() if p.name.startswith("cache.h5.tmp-")
                   and p.name not in names.values()]
    assert writing == [f"cache.h5.tmp-{host}-{os.getpid()}"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["cache.h5", names["alive"], names["elsewhere"], names["clone"],
                           names["other"]])


@pytest.mark.parametrize("hostname", ["node-1-2", "odd~name", "a-b~c"])
def test_temporary_names_of_hostnames_with_dashes_and_tildes(tmp_path, monkeypatch, hostname):
    """A hostname may hold '-' and (rarely) '~': a dead writer's file of this host is still
    found, another machine's of the same hostname still spared."""
    import socket

    from mpi_gan.io.atomic import remove_dead_temporaries, temporary_name
    from mpi_gan.io.lock import machine_id
    monkeypatch.setattr(socket, "gethostname", lambda: hostname)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    path = str(tmp_path / "x.h5")
    mine = temporary_name(path)
    assert mine == f"{path}.tmp-{hostname}~{machine_id()}-{os.getpid()}"
    dead = mine[:-len(str(os.getpid()))] + str(child.pid)
    clone = f"{path}.tmp-{hostname}~{'0' * 12}-{child.pid}"
    for name in (dead, clone):
        open(name, "wb").close()
    assert remove_dead_temporaries(path) == [dead]
    assert os.path.exists(clone)


def test_requeue_only_after_a_warning_under_slurm_with_progress():
    slurm = {"SLURM_JOB_ID": "42"}
    assert requeue_command(signal.SIGUSR1, True, slurm) == ["scontrol", "requeue", "42"]
    assert requeue_command(signal.SIGUSR2, True, slurm) == ["scontrol", "requeue", "42"]
    assert requeue_command(signal.SIGTERM, True, slurm) is None  # scancel must cancel
    assert requeue_command(signal.SIGUSR1, False, slurm) is None  # no progress: no loop
    assert requeue_command(signal.SIGUSR1, True, {}) is None      # not under SLURM


def write_fake_checkpoint(path, iteration):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["iteration"] = iteration


def test_resume_auto_fresh_unfinished_finished(tmp_path):
    cfg = MdganConfig(out=str(tmp_path / "run"), iterations=100, resume="auto")

    class Read:  # a stand-in for read_checkpoint: the iteration attribute is all it needs
        def __init__(self, path):
            with h5py.File(path, "r") as f:
                self.iteration, self.path = int(f.attrs["iteration"]), path
    assert resolve_auto(cfg, Read) is None  # nothing there: a fresh run
    write_fake_checkpoint(str(tmp_path / "run/checkpoints/ckpt_00000040.h5"), 40)
    write_fake_checkpoint(str(tmp_path / "run/checkpoints/ckpt_00000050.h5"), 50)
    assert resolve_auto(cfg, Read).iteration == 50  # the newest
    write_fake_checkpoint(str(tmp_path / "run/checkpoints/ckpt_00000100.h5"), 100)
    with pytest.raises(CheckpointError, match="holds a finished run"):
        resolve_auto(cfg, Read)


def test_disk_full_error_names_file_and_sizes(tmp_path):
    path = str(tmp_path / "x.h5")
    with pytest.raises(DiskFullError) as info, disk_full_errors(path, size_hint=5_000_000):
        raise OSError(errno.ENOSPC, "No space left on device")
    text = str(info.value)
    assert text.startswith(f"no space left on device writing {path}: it needs about 5.0 MB")
    assert "MB free in" in text and info.value.errno == errno.ENOSPC
    with pytest.raises(PermissionError), disk_full_errors(path):  # other errors pass through
        raise PermissionError(errno.EACCES, "denied")


def test_atomic_write_that_fails_keeps_the_previous_file(tmp_path):
    path = str(tmp_path / "f.h5")
    with atomic_h5(path) as f:
        f["x"] = np.arange(3)
    with pytest.raises(DiskFullError), atomic_h5(path) as f:
        f["x"] = np.arange(5)
        raise OSError(errno.ENOSPC, "No space left on device")
    with h5py.File(path, "r") as f:
        assert list(f["x"][()]) == [0, 1, 2]
    assert os.listdir(tmp_path) == ["f.h5"]  # no temporary file left


def test_sweep_prints_one_sbatch_per_combination():
    proc = subprocess.run([sys.executable, "jobs/sweep.py", "jobs/mdgan.sbatch", "--grid",
                           "WORKERS", "4", "8", "--grid", "COMPRESS", "none",
                           "adacomp:ratio=0.01,values=fp16", "--set", "ITERATIONS=50"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    lines = proc.stdout.splitlines()
    assert len(lines) == 4, proc.stderr
    assert lines[0] == ("ITERATIONS=50 WORKERS=4 COMPRESS=none sbatch --parsable "
                        "--job-name=mdgan-workers4-compressnone --ntasks=5 jobs/mdgan.sbatch")
    assert "COMPRESS=adacomp:ratio=0.01,values=fp16" in lines[1] and "--ntasks=9" in lines[3]
    bad = subprocess.run([sys.executable, "jobs/sweep.py", "jobs/mdgan.sbatch", "--grid",
                          "WORKERS", "0"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert bad.returncode == 2 and "positive whole numbers" in bad.stderr
