"""Failures users make or meet, end to end through real mpiexec runs: each must end every
rank within bounded time with one clear ``mpi_gan: error:`` line and leave earlier files
intact. (Preemption, killed ranks and the checkpoint-time full disk: test_failures.py.)"""
import errno
import gzip
import os
import re
import signal
import time
import zlib

import h5py
import pytest

from mpi_gan.comm.preemption import EXIT_PREEMPTED
from mpi_gan.io import integrity
from tests.conftest import mpirun
from tests.conftest import ASGD_FAST, FAST, digest
from tests.e2e.test_failures import Job

FASHION = "/usr/share/datasets/fashion-mnist"
MODULES = {"mpi_gan.mdgan": FAST, "mpi_gan.flgan": FAST, "mpi_gan.asgd": ASGD_FAST}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


def corrupt_deflate_stream(source: str, target: str) -> int:
    """Copy the gzip file ``source`` to ``target`` with one byte of its deflate stream
    flipped such that decompressing raises ``zlib.error`` (not the CRC's OSError: the
    case the readers used to miss); the offset."""
    data = bytearray(open(source, "rb").read())
    for offset in range(200, 20000, 97):
        trial = bytearray(data)
        trial[offset] ^= 0xFF
        try:
            gzip.decompress(bytes(trial))
        except zlib.error:
            open(target, "wb").write(trial)
            return offset
        except (OSError, EOFError):
            continue
    pytest.fail("no offset gives a zlib.error")


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="Debian's dataset-fashion-mnist")
@pytest.mark.parametrize("module", ["mpi_gan.mdgan", "mpi_gan.asgd"])  # FL-GAN: MD-GAN's set-up
def test_a_corrupt_dataset_file_ends_every_rank_with_one_line(tmp_path, module):
    """One byte flipped inside the deflate stream of the training images: every rank ends
    at once with status 2 and one line naming the file (it used to hang in set-up, rank 0
    with a zlib.error traceback, the others in the agreement)."""
    data = tmp_path / "fashion"
    data.mkdir()
    for name in os.listdir(FASHION):
        if name.startswith("train-images"):
            corrupt_deflate_stream(os.path.join(FASHION, name), data / name)
        else:
            os.symlink(os.path.join(FASHION, name), data / name)
    flags = list(MODULES[module])
    flags[flags.index("--dataset") + 1] = "fashion-mnist"
    proc = mpirun(3, [module, *flags, "--data-dir", str(data), "--cache-dir",
                      str(tmp_path / "cache"), "--out", str(tmp_path / "run")], timeout=120)
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc.stderr)
    assert "cannot read IDX file" in line and "train-images" in line and "zlib.error" in line
    assert "Traceback" not in proc.stderr + proc.stdout
    cache = tmp_path / "cache"  # no cache file, not even a temporary one
    assert not cache.exists() or not os.listdir(cache)


@pytest.mark.parametrize("module", ["mpi_gan.mdgan"])  # every entry point: Trainer's set-up
def test_an_unexpected_exception_in_set_up_ends_every_rank(tmp_path, module):
    """Any exception on one rank while it sets up, not only the expected kinds: inside an
    agreed step every rank exits with status 2 and the failing rank prints one line (its
    traceback in its log); after the agreed set-up (when the rank builds its role) the job
    is aborted with the traceback."""
    out = tmp_path / "inside"
    proc = mpirun(3, [module, *MODULES[module], "--out", str(out)], timeout=120,
                  env={"MPI_GAN_FAULT": "1:0:raise-in-setup"})
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc.stderr)
    assert line.startswith("mpi_gan: error: rank 1: RuntimeError: fault injected by "
                           "MPI_GAN_FAULT (raise-in-setup) (traceback in "), line
    assert "Traceback" not in proc.stderr + proc.stdout
    log = (out / "logs" / "rank1.log").read_text()
    assert "Traceback" in log and "raise-in-setup" in log
    proc = mpirun(3, [module, *MODULES[module], "--out", str(tmp_path / "after")],
                  timeout=120, env={"MPI_GAN_FAULT": "2:0:raise-after-setup"})
    assert proc.returncode != 0
    assert "rank 2 failed, aborting all ranks" in proc.stderr, proc.stderr
    assert "fault injected by MPI_GAN_FAULT (raise-after-setup)" in proc.stderr


def test_a_disk_filled_by_another_process_mid_run_gives_one_line(tmp_path, small_filesystem):
    """Another process fills the disk while a run goes on, logging every iteration: the log
    writes fail quietly (logs are best effort), the next checkpoint ends every rank with the
    one disk-full line, no traceback (the abort path used to die flushing the log); the
    last checkpoint and the run file (updated in place) stay whole and verify."""
    out = small_filesystem / "run"
    job = Job(3, ["mpi_gan.mdgan", "--out", out, *FAST, "--log-every", "1",
                  "--checkpoint-every", "200", "--iterations", "1000000"], tmp_path)
    job.wait_for(out, 200)
    with open(small_filesystem / "filler", "wb") as filler:
        with pytest.raises(OSError) as full:
            while True:
                filler.write(b"\0" * (1 << 20))
                filler.flush()
    assert full.value.errno == errno.ENOSPC
    code, _ = job.wait(timeout=300)
    text = job.output()
    assert code != 0
    [line] = [line for line in text.splitlines() if "error:" in line]
    assert line.startswith("mpi_gan: error: no space left on device writing "), line
    assert "Traceback" not in text and "Logging error" not in text
    with h5py.File(out / "checkpoints" / "ckpt_00000200.h5", "r") as f:
        assert f.attrs["complete"] == 1
    with h5py.File(out / "run.h5", "r") as f:  # updated in place, and still whole
        integrity.verify(f)
        assert f.attrs["iteration"] == 200 and f.attrs["finished"] == 0
        assert f["metrics/iteration"][-1] >= 200


FOREVER = ["--iterations", "1000000"]


def test_a_second_job_on_a_live_run_directory_is_refused_at_once(tmp_path):
    """Two jobs on one --out, fresh or --resume auto: the second is refused with one line
    naming the holder; the first goes on untouched and its run is its own."""
    out = tmp_path / "run"
    first = Job(3, ["mpi_gan.mdgan", "--out", out, *FAST, "--checkpoint-every", "10",
                    "--resume", "auto", *FOREVER], tmp_path)
    first.wait_for(out, 10)
    holder = (out / "run.lock").read_text()
    for extra in ([], ["--resume", "auto"]):
        second = mpirun(3, ["mpi_gan.mdgan", "--out", str(out), *FAST, "--seed", "3",
                            "--iterations", "20", *extra], timeout=60)
        assert second.returncode == 2, second.stderr
        [line] = error_lines(second.stderr)
        assert f"--out '{out}' is in use by another job: pid " in line, line
        assert f"holds {out}/run.lock" in line
    assert (out / "run.lock").read_text() == holder
    for pid in first.ranks().values():
        os.kill(pid, signal.SIGTERM)
    code, _ = first.wait()
    assert code == EXIT_PREEMPTED, first.output()
    assert not (out / "run.lock").exists()  # released at the end
    with h5py.File(out / "run.h5", "r") as f:
        assert int(f["config"].attrs["seed"]) == 7  # the first job's, never the second's
    assert "Traceback" not in first.output()


def test_a_killed_jobs_lock_is_taken_over_with_a_line(tmp_path):
    out = tmp_path / "run"
    common = ["mpi_gan.mdgan", "--out", out, *FAST, "--checkpoint-every", "10",
              "--resume", "auto"]
    job = Job(3, [*common, *FOREVER], tmp_path)
    job.wait_for(out, 10)
    job.kill()  # SIGKILL: the lock stays behind
    assert (out / "run.lock").exists()
    done = mpirun(3, [str(a) for a in common] + ["--iterations", "30"], timeout=180)
    assert done.returncode == 0, done.stderr
    assert f"took over the stale lock {out}/run.lock of pid " in done.stdout
    assert "on this host is gone" in done.stdout and "resumed from" in done.stdout


def test_resume_auto_never_replaces_a_finished_run(tmp_path):
    """A finished run whose checkpoints a user deleted: --resume auto with other settings is
    refused, whatever --iterations says, and the run file stays as it was."""
    out = tmp_path / "run"
    done = mpirun(3, ["mpi_gan.mdgan", "--out", str(out), *FAST, "--iterations", "20"])
    assert done.returncode == 0, done.stderr
    for path in (out / "checkpoints").glob("*.h5"):
        path.unlink()
    before = digest(out / "run.h5")
    for iterations, message in (("5", "holds a finished run (run.h5 finished at iteration "
                                      "20, --iterations 5): nothing to do"),
                                ("40", "holds a run at iteration 20 (finished) whose "
                                       "checkpoints are all gone")):
        proc = mpirun(3, ["mpi_gan.mdgan", "--out", str(out), *FAST, "--resume", "auto",
                          "--iterations", iterations, "--seed", "3"], timeout=60)
        assert proc.returncode == 2, proc.stderr
        [line] = error_lines(proc.stderr)
        assert message in line, line
    assert digest(out / "run.h5") == before and not (out / "run.lock").exists()


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="Debian's dataset-fashion-mnist")
def test_a_stop_signal_during_the_dataset_conversion_cuts_no_file(tmp_path):
    """SIGTERM to every rank while rank 0 converts Fashion-MNIST into its cache: the
    conversion finishes (no temporary file is left, the cache is complete), the run stops
    after its first iteration with a checkpoint and status 75 (it used to die at once,
    leaving a 27 MB ``.h5.tmp-<pid>`` in the cache directory)."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    flags = list(FAST)
    flags[flags.index("--dataset") + 1] = "fashion-mnist"
    job = Job(3, ["mpi_gan.mdgan", "--out", out, *flags, "--cache-dir", cache,
                  "--eval-every", "0", "--checkpoint-every", "1000", *FOREVER], tmp_path)
    deadline = time.monotonic() + 300
    while "converting" not in job.output() and time.monotonic() < deadline:
        assert job.proc.poll() is None, job.output()
        time.sleep(0.01)
    for pid in job.ranks().values():
        os.kill(pid, signal.SIGTERM)
    code, _ = job.wait()
    text = job.output()
    assert code == EXIT_PREEMPTED, text
    assert "Traceback" not in text and re.search(r"stopped by SIGTERM at iteration \d+", text)
    [cached] = os.listdir(cache)  # the cache, complete, and nothing else
    with h5py.File(cache / cached, "r") as f:
        assert f.attrs["complete"] == 1 and f["train_images"].shape == (60000, 1, 28, 28)


def test_a_full_disk_during_the_dataset_conversion_gives_one_line(tmp_path, small_filesystem):
    """The cache directory's disk fills while rank 0 converts MNIST into its cache: every rank
    ends with the one disk-full line naming the cache, no traceback, no temporary file."""
    cache = small_filesystem / "cache"
    with open(small_filesystem / "filler", "wb") as filler:  # leave about 2 MB free
        filler.write(b"\0" * (58 << 20))
    flags = list(FAST)
    flags[flags.index("--dataset") + 1] = "mnist"
    proc = mpirun(3, ["mpi_gan.mdgan", "--out", str(tmp_path / "run"), *flags, "--cache-dir",
                      str(cache), "--iterations", "2", "--eval-every", "0"], timeout=300)
    assert proc.returncode != 0
    [line] = error_lines(proc.stderr)
    assert line.startswith(f"mpi_gan: error: no space left on device writing {cache}/"), line
    assert re.search(r"it needs about 5\d\.\d MB, [0-9.]+ MB free in ", line), line  # 55 MB
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert not [name for name in os.listdir(cache) if ".tmp-" in name]
