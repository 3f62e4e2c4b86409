"""Preemption and failures through real mpiexec runs: stop signals then ``--resume auto``,
a worker killed with SIGKILL, rank 0 killed while writing a checkpoint, a full disk.

No test depends on timing: a run is signalled or killed once it has written a checkpoint
at or past a given iteration (with ``--iterations`` far beyond it), and what the test asserts is what the
run wrote. The only bounds on time are generous ceilings (a hang is the failure)."""
import os
import re
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest

from mpi_gan.comm.preemption import ANNOUNCE_SIGINT, EXIT_PREEMPTED
from tests.conftest import MPIEXEC, PYTHON, mpirun, wait_for_checkpoint
from tests.conftest import FAST, all_params, assert_replayed, digest, shard_of

FOREVER = ["--iterations", "1000000"]
ASGD = ["--dataset", "synthetic", "--synthetic-size", "400", "--eval-size", "200",
        "--eval-every", "1000000", "--log-every", "1000", "--seed", "2"]


class Job:
    """``mpiexec -n n python -m <args>`` in the background, output to files."""

    def __init__(self, n, args, tmp_path, env=None):
        self.out_file, self.err_file = tmp_path / "job.out", tmp_path / "job.err"
        with open(self.out_file, "w") as out, open(self.err_file, "w") as err:
            self.proc = subprocess.Popen([MPIEXEC, "-n", str(n), PYTHON, "-m", *args],
                                         stdout=out, stderr=err,
                                         env=dict(os.environ, PYTHONUNBUFFERED="1",
                                                  **(env or {})))
        self.args = [str(a) for a in args]

    def wait_for(self, out, at_least, timeout=300):
        """Wait until the run in ``out`` has a checkpoint at ``at_least`` or later (it has
        got that far); its iteration."""
        def ended():
            if self.proc.poll() is None:
                return None
            return f"status {self.proc.returncode}:\n" + self.output()
        try:
            return wait_for_checkpoint(out, at_least, ended, timeout=timeout)
        except BaseException:
            self.kill()
            raise

    def ranks(self):
        """{MPI rank: pid} of the job's Python ranks (found by their command line, which
        mpiexec's is not, and their PMI_RANK)."""
        found = {}
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().decode().split("\0")[:-1]
                if not argv or argv[0] != PYTHON or argv[2:] != self.args:
                    continue
                with open(f"/proc/{entry}/environ", "rb") as f:
                    env = dict(v.split("=", 1) for v in f.read().decode().split("\0") if "=" in v)
            except (OSError, ValueError):
                continue
            found[int(env.get("PMI_RANK", -1))] = int(entry)
        return found

    def wait(self, timeout=300):
        """Exit status, and the seconds it took to come."""
        tic = time.monotonic()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the job hung for {timeout} s:\n" + self.output())
        return code, time.monotonic() - tic

    def kill(self):
        for pid in self.ranks().values():
            os.kill(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait()

    def output(self):
        return self.out_file.read_text() + self.err_file.read_text()


def ckpt(out, iteration):
    return out / "checkpoints" / f"ckpt_{iteration:08d}.h5"


def stopped_at(text):
    """The iteration of a run's 'stopped by SIG... at iteration N' line."""
    return int(re.search(r"stopped by SIG\w+ at iteration (\d+)", text).group(1))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("module,signum,to_ranks", [
    ("mpi_gan.mdgan", signal.SIGUSR1, False),  # to mpiexec, which forwards it to every rank
    ("mpi_gan.flgan", signal.SIGTERM, True),   # to every rank
])
def test_stop_signal_then_resume_auto_is_bit_identical(tmp_path, module, signum, to_ranks):
    """Signalled mid-run: every rank stops at one iteration S with a checkpoint and status
    75; ``--resume auto --iterations S+8`` ends bit-identical to a run of S+8 in one go;
    ``--resume auto`` on the finished run is refused; on an empty --out it starts fresh."""
    out = tmp_path / "stopped"
    common = [*FAST, "--checkpoint-every", "10", "--resume", "auto"]
    job = Job(3, [module, "--out", out, *common, *FOREVER], tmp_path)
    job.wait_for(out, 10)
    for pid in job.ranks().values() if to_ranks else [job.proc.pid]:
        os.kill(pid, signum)
    code, _ = job.wait()
    text = job.output()
    assert code == EXIT_PREEMPTED, text
    stop = stopped_at(text)
    assert stop >= 10 and f"stopped by {signal.Signals(signum).name}" in text
    assert ckpt(out, stop).exists() and "Traceback" not in text
    with h5py.File(out / "run.h5", "r") as f:
        assert f.attrs["finished"] == 0 and f.attrs["iteration"] == stop

    total = stop + 8
    resumed = mpirun(3, [module, "--out", str(out), *common, "--iterations", str(total)])
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {ckpt(out, stop)}" in resumed.stdout
    straight = tmp_path / "straight"  # --resume auto on a fresh --out: a fresh run
    fresh = mpirun(3, [module, "--out", str(straight), *common, "--iterations", str(total)])
    assert fresh.returncode == 0, fresh.stderr
    assert "resumed" not in fresh.stdout
    a, b = all_params(ckpt(straight, total)), all_params(ckpt(out, total))
    assert a.keys() == b.keys() and any("rng" in k for k in a)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    with h5py.File(straight / "run.h5", "r") as f1, h5py.File(out / "run.h5", "r") as f2:
        assert np.array_equal(f1["metrics/d_loss"][()], f2["metrics/d_loss"][()])
        assert f2.attrs["finished"] == 1

    again = mpirun(3, [module, "--out", str(out), *common, "--iterations", str(total)])
    assert again.returncode != 0 and "holds a finished run" in again.stderr, again.stderr
    assert again.stderr.count("error:") == 1


@pytest.mark.timeout(600)
def test_ctrl_c_stops_with_a_checkpoint_and_no_traceback(tmp_path):
    """Ctrl-C in a terminal: SIGINT to mpiexec and to every rank (one process group); MPICH's
    mpiexec forwards it again. Every rank stops at one iteration with a checkpoint, status
    75, no KeyboardInterrupt traceback (there used to be about 90 lines of them)."""
    out = tmp_path / "run"
    job = Job(3, ["mpi_gan.mdgan", "--out", out, *FAST, "--checkpoint-every", "10",
                  *FOREVER], tmp_path)
    job.wait_for(out, 10)
    for pid in [job.proc.pid, *job.ranks().values()]:
        os.kill(pid, signal.SIGINT)
    code, _ = job.wait()
    text = job.output()
    assert code == EXIT_PREEMPTED, text
    stop = stopped_at(text)
    assert "stopped by SIGINT" in text and ckpt(out, stop).exists()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    # rank 0 alone says at once what happens next, once (mpiexec's forwarded copy is the
    # same Ctrl-C)
    assert text.count(ANNOUNCE_SIGINT.decode().strip()) == 1, text


def sigterm_then_resume(tmp_path, out, common, first, more):
    """Run ``common`` (3 ranks) until checkpoint ``first``, SIGTERM every rank (as srun
    does): status 75, a checkpoint, no traceback; then ``--resume auto`` for ``more``
    iterations, which must succeed: returns its CompletedProcess, ``stop`` added."""
    job = Job(3, [*common, *FOREVER], tmp_path)
    job.wait_for(out, first)
    for pid in job.ranks().values():
        os.kill(pid, signal.SIGTERM)
    code, _ = job.wait()
    text = job.output()
    # Every rank leaves through the C library's exit after MPI_Finalize (exit_now): with
    # os._exit MPICH's mpiexec took the first rank out for a dead one, SIGKILLed the rest
    # and reported 9 (1 run in 5 here, more on a loaded machine).
    assert code == EXIT_PREEMPTED, text
    stop = stopped_at(text)
    assert ckpt(out, stop).exists() and "Traceback" not in text
    done = mpirun(3, [str(a) for a in common] + ["--iterations", str(stop + more)],
                  timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resumed from {ckpt(out, stop)}" in done.stdout
    done.stop = stop
    return done


@pytest.mark.timeout(600)
def test_asgd_stops_on_sigterm_and_resumes_auto(tmp_path):
    """The asynchronous server acts on its own flag: SIGTERM to every rank (as srun sends
    it) ends the run with a checkpoint and status 75; ``--resume auto`` finishes it."""
    out = tmp_path / "asgd"
    common = ["mpi_gan.asgd", "--out", out, *ASGD, "--checkpoint-every", "20",
              "--resume", "auto"]
    done = sigterm_then_resume(tmp_path, out, common, 20, 30)
    assert "final test accuracy" in done.stdout


@pytest.mark.timeout(600)
def test_bounded_staleness_stopped_by_a_signal_resumes_as_its_replay(tmp_path):
    """--staleness-bound 1, worker 2 twice as slow, G stepping on N - 1 = 1 fresh feedback
    (--staleness-patience 0: the rule of run files written before the option, so that the
    straggler's feedback comes late whatever the timings), SIGTERM to every rank mid-run:
    the server drains (which may leave an update due, made first by the next launch) and stops
    with a checkpoint; ``--resume auto`` goes on to the end. The single-process replay of
    the whole recorded schedule equals every rank's final state, bit for bit."""
    from mpi_gan.algorithms.mdgan.config import MdganConfig
    out = tmp_path / "stale"
    common = ["mpi_gan.mdgan", "--out", out, *FAST, "--staleness-bound", "1", "--slow",
              "2:2", "--staleness-patience", "0", "--checkpoint-every", "10", "--resume",
              "auto"]
    stop = sigterm_then_resume(tmp_path, out, common, 10, 7).stop
    with h5py.File(out / "run.h5", "r") as f:
        cfg = MdganConfig.from_attrs(f["config"].attrs)
    schedule = assert_replayed(cfg, 3, out / "run.h5", ckpt(out, stop + 7))
    assert (schedule["event"] == 3).sum() >= 2  # the stop's checkpoint and the last


@pytest.mark.timeout(600)
def test_sigkill_of_a_worker_ends_the_job_and_keeps_the_checkpoint(tmp_path):
    """A worker killed with SIGKILL: mpiexec ends every rank within 30 s; the newest
    checkpoint is intact and ``--resume auto`` continues from it to the end."""
    out = tmp_path / "run"
    common = ["mpi_gan.mdgan", "--out", out, *FAST, "--checkpoint-every", "10",
              "--resume", "auto"]
    job = Job(4, [*common, *FOREVER], tmp_path)
    job.wait_for(out, 20)
    ranks = job.ranks()
    assert sorted(ranks) == [0, 1, 2, 3], ranks
    os.kill(ranks[2], signal.SIGKILL)
    code, seconds = job.wait(timeout=120)
    print(f"worker SIGKILL: the job ended {seconds:.2f} s later")
    assert code != 0
    assert seconds < 30, f"{seconds:.1f} s to end the job"
    assert not job.ranks()  # no rank left behind
    newest = sorted((out / "checkpoints").glob("ckpt_*.h5"))[-1]
    with h5py.File(newest, "r") as f:
        assert f.attrs["complete"] == 1
        stop = int(f.attrs["iteration"])
    done = mpirun(4, [str(a) for a in common] + ["--iterations", str(stop + 5)])
    assert done.returncode == 0, done.stderr
    assert f"resumed from {newest}" in done.stdout


@pytest.mark.timeout(600)
@pytest.mark.parametrize("killed", [2])
def test_writer_killed_mid_checkpoint_keeps_the_previous_one(tmp_path, killed):
    """A rank (a worker: rank 0's shard is written by the same code) SIGKILLs itself while
    writing its shard of the checkpoint
    of iteration 20 (a first tensor already in its temporary file): the job ends with no
    manifest of 20, the checkpoint of 10 is untouched and valid, and ``--resume auto``
    resumes from it, removes the stray temporary file and the orphan shards, and ends
    bit-identical to a run never interrupted."""
    out = tmp_path / "run"
    common = ["mpi_gan.mdgan", *FAST, "--checkpoint-every", "10", "--resume", "auto",
              "--iterations", "30"]
    job = Job(3, [*common, "--out", out], tmp_path,
              env={"MPI_GAN_FAULT": f"{killed}:20:kill-in-checkpoint"})
    code, _ = job.wait(timeout=300)
    assert code != 0 and not ckpt(out, 20).exists()
    assert not job.ranks()
    stray = list((out / "checkpoints").glob(f"ckpt_00000020.*/rank_{killed}.h5.tmp-*"))
    assert stray, "the killed writer left no temporary file: it was not killed mid-write"
    orphans = [p for p in (out / "checkpoints").glob("ckpt_00000020.*") if p.is_dir()]
    before = digest(ckpt(out, 10))
    done = mpirun(3, [*common, "--out", str(out)])
    assert done.returncode == 0, done.stderr
    assert f"resumed from {ckpt(out, 10)}" in done.stdout
    assert not list((out / "checkpoints").glob("**/*.tmp-*"))
    assert orphans and not any(p.exists() for p in orphans)
    straight = mpirun(3, [*common, "--out", str(tmp_path / "straight")])
    assert straight.returncode == 0, straight.stderr
    a, b = all_params(ckpt(tmp_path / "straight", 30)), all_params(ckpt(out, 30))
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert before != digest(ckpt(out, 30))


@pytest.mark.timeout(600)
def test_a_stop_right_after_a_checkpoint_writes_new_shards_never_over_named_ones(tmp_path):
    """A stop signal during the step that ends at a checkpoint iteration (10): the periodic
    checkpoint of 10, then the final one of 10 again. The second goes to a shard directory
    of its own and replaces the manifest only once whole (shards a manifest names are never
    rewritten in place); one directory of 10 is left, and the run resumes exactly."""
    out = tmp_path / "run"
    common = ["mpi_gan.mdgan", *FAST, "--checkpoint-every", "10", "--resume", "auto",
              "--iterations", "20"]
    stopped = mpirun(3, [*common, "--out", str(out)], env={"MPI_GAN_FAULT": "1:9:signal"})
    assert stopped.returncode == EXIT_PREEMPTED, stopped.stderr
    log = (out / "logs" / "rank0.log").read_text()
    written = re.findall(rf"checkpoint {re.escape(str(ckpt(out, 10)))} \(shards in (\S+)\)", log)
    assert len(written) == 2 and written[0] != written[1]  # twice, each in its own directory
    dirs = sorted(p.name for p in (out / "checkpoints").glob("ckpt_00000010.*") if p.is_dir())
    with h5py.File(ckpt(out, 10), "r") as f:
        assert dirs == [written[1]] == [f["shards"].attrs["directory"]]
    from mpi_gan.mdgan import MDGAN
    manifest = MDGAN().reader(str(ckpt(out, 10)))
    assert all(manifest.rank_state(r) for r in range(3))  # every shard matches its digest
    done = mpirun(3, [*common, "--out", str(out)])
    assert done.returncode == 0, done.stderr
    straight = mpirun(3, [*common, "--out", str(tmp_path / "straight")])
    assert straight.returncode == 0, straight.stderr
    a, b = all_params(ckpt(tmp_path / "straight", 20)), all_params(ckpt(out, 20))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.timeout(600)
def test_a_damaged_worker_shard_is_found_by_its_rank(tmp_path):
    """One byte of worker 2's shard changed, its size kept: rank 0 reads the manifest and
    sees nothing wrong; rank 2 checks its own shard's digest. Named, the checkpoint is
    refused with rank 2's one line; under --resume auto it is passed over, with that line
    as the warning, for the older one."""
    out = tmp_path / "run"
    common = ["mpi_gan.mdgan", *FAST, "--checkpoint-every", "5", "--keep-checkpoints", "2"]
    assert mpirun(3, [*common, "--iterations", "10", "--out", str(out)]).returncode == 0
    newest = ckpt(out, 10)
    shard = shard_of(newest, 2)
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2] ^= 0x5A
    open(shard, "wb").write(bytes(data))
    why = (f"{newest}: rank 2's shard {shard} does not match the checksum in its manifest: "
           "refused (changed or damaged after it was written)")
    named = mpirun(3, [*common, "--iterations", "15", "--out", str(out), "--resume",
                       str(newest)])
    assert named.returncode == 2
    assert [line for line in named.stderr.splitlines() if line.startswith("mpi_gan:")] == \
        [f"mpi_gan: error: {why}"], named.stderr
    auto = mpirun(3, [*common, "--iterations", "15", "--out", str(out), "--resume", "auto"])
    assert auto.returncode == 0, auto.stderr
    assert auto.stdout.splitlines()[0] == (f"{why}; resuming from the newest checkpoint that "
                                           f"verifies, {ckpt(out, 5)}")
    assert f"resumed from {ckpt(out, 5)} at iteration 5" in auto.stdout


@pytest.mark.timeout(600)
def test_full_disk_during_a_checkpoint_gives_one_clear_error(tmp_path, small_filesystem):
    """Checkpoints of about 25 MB on a 60 MB filesystem: the third does not fit. One
    ``mpi_gan: error:`` line naming the file and the space, no traceback, every rank ends,
    the previous checkpoints stay valid."""
    out = small_filesystem / "run"
    proc = mpirun(3, ["mpi_gan.mdgan", "--out", str(out), *FAST, "--checkpoint-every", "5",
                      "--keep-checkpoints", "2", "--iterations", "1000"], timeout=300)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mpi_gan: error:")]
    assert len(errors) == 1, proc.stderr
    # a shard, or the manifest, whichever met the full disk first
    assert re.search(r"no space left on device writing \S+/checkpoints/ckpt_\d{8}"
                     r"(\.h5|\.[0-9a-f]{8}/rank_\d\.h5): it needs about \d+\.\d MB, "
                     r"\d+\.\d MB free", errors[0]), errors[0]
    assert "Traceback" not in proc.stderr and "AttributeError" not in proc.stderr
    kept = sorted((out / "checkpoints").glob("ckpt_*.h5"))
    assert len(kept) == 2 and not list((out / "checkpoints").glob("**/*.tmp-*"))
    from mpi_gan.mdgan import MDGAN
    for path in kept:
        with h5py.File(path, "r") as f:
            assert f.attrs["complete"] == 1
        ckpt_read = MDGAN().reader(str(path))
        for rank in range(3):  # every shard there, and matching its digest
            assert ckpt_read.rank_state(rank)
