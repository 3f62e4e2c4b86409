"""One job per run directory (``io/lock.py``): real lock files, real processes; the
staleness rules each way. No MPI."""
import datetime
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from mpi_gan.io import lock as run_lock
from mpi_gan.io.lock import LockError, RunLock, read_holder


def write_lock(out, **fields):
    path = out / run_lock.LOCK_NAME
    path.write_text("".join(f"{k}={v}\n" for k, v in fields.items()))
    return path


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_lock_records_its_holder_and_refuses_a_second_job(tmp_path):
    first = RunLock(str(tmp_path))
    first.acquire()
    holder = read_holder(first.path)
    assert holder["host"] == socket.gethostname() and holder["pid"] == str(os.getpid())
    assert holder["start"].endswith("+00:00") and holder["slurm_restart"]
    with pytest.raises(LockError, match=rf"is in use by another job: pid {os.getpid()} on "
                       rf"{socket.gethostname()} since .* holds .*run\.lock") as caught:
        RunLock(str(tmp_path)).acquire()
    stale_at = datetime.datetime.fromtimestamp(os.stat(first.path).st_mtime + 120,
                                               datetime.timezone.utc)
    assert str(caught.value).endswith(
        "(if that job is dead, its lock is taken over once its heartbeat is 120 s old, at "
        f"{stale_at.isoformat(timespec='seconds')})")
    first.release()
    assert not os.path.exists(first.path)
    second = RunLock(str(tmp_path))
    second.acquire()  # free again
    second.release()


def test_a_lock_whose_process_on_this_host_is_gone_is_taken_over(tmp_path):
    pid = dead_pid()
    write_lock(tmp_path, host=socket.gethostname(), pid=pid, start="then", slurm_job="",
               slurm_restart=0)
    said = []
    lock = RunLock(str(tmp_path))
    lock.acquire(said.append)
    assert said == [f"took over the stale lock {lock.path} of pid {pid} on "
                    f"{socket.gethostname()} since then: its process {pid} on this host "
                    "is gone"]
    assert read_holder(lock.path)["pid"] == str(os.getpid())
    assert not [p for p in os.listdir(tmp_path) if ".stale-" in p]
    lock.release()


def test_the_machine_id_tells_apart_kernels_and_pid_spaces(tmp_path):
    """Two nodes (or containers) may share a hostname: the pid of a holder is looked up
    here only when the holder's machine id is this one's (boot id and pid namespace,
    digested here by the test itself); an older lock without one is judged by hostname."""
    import hashlib
    boot = open("/proc/sys/kernel/random/boot_id").read().strip()
    expected = hashlib.blake2b(f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}".encode(),
                               digest_size=6).hexdigest()
    assert run_lock.machine_id() == expected
    assert run_lock.this_host() == f"{socket.gethostname()}~{expected}"
    here = socket.gethostname()
    assert run_lock.same_host(here, expected) and run_lock.same_host(here, None)
    assert not run_lock.same_host(here, "0" * 12) and not run_lock.same_host("node7", None)
    holder = read_holder(str(write_lock(tmp_path, host=here, machine="0" * 12, pid=dead_pid(),
                                        start="then")))
    assert run_lock.stale_reason(holder, age=10) is None  # not this kernel's pid: wait
    assert "heartbeat stopped" in run_lock.stale_reason(holder, age=200)
    holder["machine"] = expected
    assert "on this host is gone" in run_lock.stale_reason(holder, age=10)
    del holder["machine"]
    assert "on this host is gone" in run_lock.stale_reason(holder, age=10)


def test_a_lock_on_another_host_is_stale_only_once_its_heartbeat_stopped(tmp_path):
    path = write_lock(tmp_path, host="other-node", pid=1, start="then", slurm_job="",
                      slurm_restart=0)
    with pytest.raises(LockError, match="pid 1 on other-node"):
        RunLock(str(tmp_path)).acquire()
    old = time.time() - run_lock.STALE_SECONDS - 5
    os.utime(path, (old, old))
    said = []
    lock = RunLock(str(tmp_path))
    lock.acquire(said.append)
    assert "its heartbeat stopped" in said[0]
    lock.release()


def test_a_requeued_slurm_job_takes_over_its_own_lock(tmp_path, monkeypatch):
    write_lock(tmp_path, host="other-node", pid=1, start="then", slurm_job="77",
               slurm_restart=0)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # the same instance: still live
    with pytest.raises(LockError, match=r"\(SLURM job 77\)"):
        RunLock(str(tmp_path)).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "78")  # another job
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with pytest.raises(LockError):
        RunLock(str(tmp_path)).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "77")  # the job after its requeue
    said = []
    lock = RunLock(str(tmp_path))
    lock.acquire(said.append)
    assert "it is this SLURM job's (77) before its requeue" in said[0]
    assert read_holder(lock.path)["slurm_restart"] == "1"
    lock.release()


def test_the_heartbeat_keeps_the_lock_fresh_and_release_spares_another_holder(
        tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "HEARTBEAT_SECONDS", 0.05)
    lock = RunLock(str(tmp_path))
    lock.acquire()
    old = time.time() - 1000
    os.utime(lock.path, (old, old))
    deadline = time.monotonic() + 60
    while os.stat(lock.path).st_mtime < old + 500 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.stat(lock.path).st_mtime > old + 500
    # someone took the directory over meanwhile: releasing must not remove their lock
    write_lock(tmp_path, host="other-node", pid=2, start="now")
    lock.release()
    assert read_holder(lock.path)["pid"] == "2"


def test_a_lock_taken_over_is_seen_lost_and_its_heartbeat_leaves_it_alone(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(run_lock, "HEARTBEAT_SECONDS", 0.05)
    lock = RunLock(str(tmp_path))
    lock.acquire()
    assert lock.check() == ""
    os.unlink(lock.path)  # our heartbeat stalled; another job judged it stale, took over
    write_lock(tmp_path, host="other-node", pid=2, start="now")
    old = time.time() - 1000
    os.utime(lock.path, (old, old))
    assert lock.check() == (f"its lock {lock.path} was taken over by another job, pid 2 on "
                            "other-node since now, which judged it stale (its heartbeat older "
                            "than 120 s, or its process gone)")
    time.sleep(0.5)  # ten heartbeats: none touches the other job's lock
    assert abs(os.stat(lock.path).st_mtime - old) < 1
    lock.release()
    assert read_holder(lock.path)["pid"] == "2"


def test_a_lock_removed_for_good_is_lost_but_one_renamed_aside_for_an_instant_is_not(
        tmp_path):
    lock = RunLock(str(tmp_path))
    lock.acquire()
    aside = lock.path + ".aside"
    os.rename(lock.path, aside)  # a taker's rename-aside, put back within a second
    threading.Timer(0.5, os.rename, (aside, lock.path)).start()
    assert lock.check() == ""
    os.unlink(lock.path)
    assert lock.check() == f"its lock {lock.path} was removed while it ran"
    lock.release()


def test_a_run_that_lost_its_lock_stops_before_writing_again(tmp_path):
    from tests.conftest import wait_for_checkpoint
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "mpi_gan.standalone", "--dataset", "ring",
                             "--iterations", "1000000", "--checkpoint-every", "20",
                             "--log-every", "5", "--eval-every", "0", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_checkpoint(str(out), 20, proc.poll)
        os.unlink(out / run_lock.LOCK_NAME)
        write_lock(out, host="other-node", pid=2, start="now")
        out_text, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode != 0
    lines = [line for line in err.splitlines() if line.startswith("mpi_gan: error:")]
    assert lines == [f"mpi_gan: error: this job stops without writing anything more: its lock "
                     f"{out / run_lock.LOCK_NAME} was taken over by another job, pid 2 on "
                     "other-node since now, which judged it stale (its heartbeat older than "
                     "120 s, or its process gone); --out is that job's now"], err
    # said once on the console (the log file has it too)
    assert (out_text + err).count("this job stops without writing anything more") == 1
    assert "this job stops without writing anything more" in \
        (out / "logs" / "rank0.log").read_text()
    assert read_holder(str(out / run_lock.LOCK_NAME))["pid"] == "2"  # theirs, untouched


def test_the_run_directorys_writers_refuse_once_the_lock_is_lost(tmp_path):
    """``RunFile`` and ``write_checkpoint`` check the lock themselves, so that no writer of
    ``--out`` (one added later included) writes for a job that lost it."""
    import h5py
    import numpy as np

    from mpi_gan.algorithms.mdgan.config import MdganConfig
    from mpi_gan.io.checkpoint import checkpoint_path, write_checkpoint
    from mpi_gan.io.shards import write_shard
    from mpi_gan.io.traffic import Traffic
    from mpi_gan.io.lock import LockLost
    from mpi_gan.io.runlog import Metrics, RunFile, RunRecord, read_table
    out = tmp_path / "run"
    out.mkdir()
    lock = run_lock.take(str(out), print)
    try:
        table = Metrics({"iteration": (np.int64, ())})
        traffic = Traffic.empty(("a",), 2)
        record = RunRecord(MdganConfig(), 2, ("a",), {"metrics": table})
        run = RunFile(str(out / "run.h5"), record, "test", 0, traffic, "generator", [])
        table.append(iteration=1)
        run.append_rows()  # held: written
        os.unlink(lock.path)
        write_lock(out, host="other-node", pid=2, start="now")
        before = (out / "run.h5").read_bytes()
        with pytest.raises(LockLost, match="taken over by another job, pid 2 on other-node"):
            run.update(1, traffic, [], finished=True)  # no rows pending: its own check
        table.append(iteration=2)
        with pytest.raises(LockLost):
            run.append_rows()
        with pytest.raises(LockLost):
            RunFile(str(out / "new.h5"), record, "test", 0, traffic, "generator", [])
        path = checkpoint_path(str(out), 2)
        with pytest.raises(LockLost):
            write_checkpoint(path, record, "test", 2, "ckpt_00000002.00000000", [], traffic)
        with pytest.raises(LockLost):  # rank 0's shard too
            write_shard(os.path.join(os.path.dirname(path), "d"), 0, 2, "test", [])
        assert not (out / "new.h5").exists()
        assert (out / "run.h5").read_bytes() == before and not os.path.exists(path)
        assert not os.path.exists(os.path.dirname(path))
        with h5py.File(out / "run.h5") as f:
            assert list(read_table(f)["iteration"]) == [1]
    finally:
        run_lock.release_all()
    assert read_holder(str(out / run_lock.LOCK_NAME))["pid"] == "2"  # theirs, untouched


def test_a_rank_that_does_not_see_rank_0s_out_is_refused_with_one_line(tmp_path):
    """Every rank writes its own checkpoint shards into --out: a rank that does not see
    the probe rank 0 wrote there (a node-local --out) is refused at start-up, by name."""
    from mpi_gan.train.startup import check_probe, remove_probe, write_probe
    shared, local = tmp_path / "shared", tmp_path / "elsewhere"
    for out in (shared, local):
        (out / "logs").mkdir(parents=True)
    write_probe(str(shared))
    check_probe(str(shared), 3, seconds=0)  # seen: passes at once
    with pytest.raises(OSError, match=r"--out '.*elsewhere' is not one directory that every "
                       r"rank sees: rank 3 on \S+ does not see the files rank 0 writes"):
        check_probe(str(local), 3, seconds=0.2)
    remove_probe(str(shared))
    assert not os.listdir(shared / "logs")
