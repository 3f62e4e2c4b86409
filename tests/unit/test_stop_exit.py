"""How rank 0 waits for the workers to leave after a stop (``train.entry.wait_for_exits``),
so that its non-zero status comes last and MPICH's mpiexec has no rank left to kill:
real child processes and real ``.finalized-*`` marks; only lower bounds on time."""
import socket
import subprocess
import sys
import time

import pytest

from mpi_gan.train import entry


def write_mark(path, host, pid):
    path.write_text(f"{host} {pid}\n")
    return str(path)


@pytest.fixture
def sleeper():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child
    child.kill()
    child.wait()


def test_a_running_process_is_alive_and_a_zombie_is_not(sleeper):
    assert entry.process_alive(sleeper.pid)
    sleeper.kill()
    deadline = time.monotonic() + 30
    while entry.process_alive(sleeper.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sleeper.returncode is None  # not reaped: a zombie, and it counts as gone
    assert not entry.process_alive(sleeper.pid)
    sleeper.wait()
    assert not entry.process_alive(sleeper.pid)  # reaped: no such process


def test_waits_for_a_local_rank_until_it_has_exited(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    mark = write_mark(tmp_path / ".finalized-1", socket.gethostname(), child.pid)
    entry.wait_for_exits([mark], time.monotonic() + 60)
    assert not entry.process_alive(child.pid)
    child.wait()


def test_gives_a_rank_on_another_host_the_grace(tmp_path, monkeypatch):
    monkeypatch.setattr(entry, "REMOTE_EXIT_GRACE", 0.3)
    mark = write_mark(tmp_path / ".finalized-1", "some-other-node", 12345)
    start = time.monotonic()
    entry.wait_for_exits([mark], start + 60)
    assert time.monotonic() - start >= 0.3


def test_an_unreadable_mark_counts_as_remote_and_the_deadline_bounds_a_stuck_rank(
        tmp_path, monkeypatch, sleeper):
    monkeypatch.setattr(entry, "REMOTE_EXIT_GRACE", 0.2)
    garbled = tmp_path / ".finalized-2"
    garbled.write_text("not a mark")
    stuck = write_mark(tmp_path / ".finalized-1", socket.gethostname(), sleeper.pid)
    start = time.monotonic()
    entry.wait_for_exits([stuck, str(garbled), str(tmp_path / "missing")], start + 0.4)
    assert time.monotonic() - start >= 0.4  # waited for the stuck rank until the deadline
    assert entry.process_alive(sleeper.pid)


def test_marks_name_the_machine_and_a_clone_sharing_the_hostname_is_remote(
        tmp_path, monkeypatch, sleeper):
    """A mark written today names hostname and machine id: this machine's is waited for by
    its pid; one of another machine with the same hostname (a cloned node, a container)
    gets the remote grace, its pid never looked up here (it may be a live local process)."""
    from mpi_gan.io.lock import this_host
    monkeypatch.setattr(entry, "REMOTE_EXIT_GRACE", 0.3)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    mine = write_mark(tmp_path / ".finalized-1", this_host(), child.pid)
    entry.wait_for_exits([mine], time.monotonic() + 60)
    assert not entry.process_alive(child.pid)
    child.wait()
    clone = write_mark(tmp_path / ".finalized-2", f"{socket.gethostname()}~{'0' * 12}",
                       sleeper.pid)
    start = time.monotonic()
    entry.wait_for_exits([clone], start + 60)  # not held until the deadline by the live pid
    assert 0.3 <= time.monotonic() - start < 30
