"""End-to-end tests of ``python -m mpi_gan.mdgan`` through real mpiexec subprocesses."""
import hashlib
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tests.conftest import datasets_in, mpirun

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAST = ["--dataset", "synthetic", "--synthetic-size", "96", "--batch-size", "8",
        "--log-every", "100", "--seed", "7"]


def mdgan(n, out, *extra, timeout=240, env=None):
    return mpirun(n, ["mpi_gan.mdgan", "--out", str(out), *FAST, *extra], timeout=timeout, env=env)


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def all_params(path):
    """Every rank's state in a checkpoint (models, Adam, RNG, compressor), by path."""
    with h5py.File(path, "r") as f:
        return {name: f["state"][name][()] for name in datasets_in(f["state"])}


def test_help_prints_defaults():
    proc = mpirun(1, ["mpi_gan.mdgan", "--help"], timeout=60)
    assert proc.returncode == 0
    assert "--disc-steps" in proc.stdout and "(default: 1)" in proc.stdout
    assert "--checkpoint-every" in proc.stdout and "(default: 500)" in proc.stdout


@pytest.mark.parametrize("world", [2, 3, 4])
def test_resume_is_bit_identical(tmp_path, world):
    """2T iterations in one go == T, then --resume up to 2T (swaps and ACGAN included)."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    # 96 samples, batch 8: N = 2 swaps after iterations 6 and 12, N = 3 after 4, 8 and 12
    # compressed feedback: the compressor's call counter and the residual must resume too
    common = ["--swap-adam", "travel", "--checkpoint-every", "6", "--keep-checkpoints", "5",
              "--compress", "randomk:ratio=0.2", "--residual"]
    p1 = mdgan(world, straight, "--iterations", "12", *common)
    assert p1.returncode == 0, p1.stderr
    p2 = mdgan(world, split, "--iterations", "6", *common)
    assert p2.returncode == 0, p2.stderr
    first = split / "checkpoints" / "ckpt_00000006.h5"
    before = digest(first)
    p3 = mdgan(world, split, "--iterations", "12", *common, "--resume", str(split))
    assert p3.returncode == 0, p3.stderr
    assert "resumed from" in p3.stdout
    assert digest(first) == before  # the checkpoint resumed from is untouched
    a = all_params(straight / "checkpoints" / "ckpt_00000012.h5")
    b = all_params(split / "checkpoints" / "ckpt_00000012.h5")
    assert a.keys() == b.keys() and len(a) > 20
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    with h5py.File(split / "run.h5", "r") as f:
        assert f["metrics/iteration"][()].tolist() == list(range(1, 13))
    with h5py.File(straight / "run.h5", "r") as f1, h5py.File(split / "run.h5", "r") as f2:
        assert np.array_equal(f1["metrics/d_loss"][()], f2["metrics/d_loss"][()])


def bad_runs(tmp_path):
    good = tmp_path / "good"
    proc = mdgan(3, good, "--iterations", "4", "--checkpoint-every", "2")
    assert proc.returncode == 0, proc.stderr
    ckpt = good / "checkpoints" / "ckpt_00000004.h5"
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(open(ckpt, "rb").read()[:5000])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = tmp_path / "bad"
    return good, ckpt, [
        (1, ["--iterations", "2"], "at least 2 MPI ranks"),
        (3, ["--k", "3"], "1 <= k <= number of workers (2), got 3"),
        (3, ["--k", "0"], "1 <= k <= number of workers"),
        (3, ["--batch-size", "0"], "must be a positive integer"),
        (3, ["--batch-size", "-4"], "must be a positive integer"),
        (3, ["--iterations", "abc"], "must be an integer"),
        (3, ["--dataset", "mnist", "--data-dir", str(tmp_path / "missing")],
         "does not exist or is not a directory"),
        (3, ["--resume", str(corrupt), "--iterations", "8"], "corrupt or truncated"),
        (3, ["--resume", str(ckpt), "--iterations", "8", "--model", "cnn"],
         "--model 'mlp' in checkpoint vs 'cnn' now"),
        (4, ["--resume", str(ckpt), "--iterations", "8"], "written by 3 ranks"),
        (3, ["--resume", str(tmp_path / "nothing-here"), "--iterations", "8"], "no such file"),
        (3, ["--out", str(blocker / "sub")], "is not a writable directory"),
        # a new run must not overwrite an earlier run's files
        (3, ["--out", str(good), "--iterations", "8"], "already holds a run"),
    ], out


def test_bad_input_fails_fast_with_one_message(tmp_path):
    good, ckpt, cases, out = bad_runs(tmp_path)
    before, run_before = digest(ckpt), digest(good / "run.h5")
    for n, args, message in cases:
        proc = mpirun(n, ["mpi_gan.mdgan", *FAST, "--out", str(out), *args], timeout=60)
        assert proc.returncode != 0, (args, proc.stdout)
        assert message in proc.stderr, (args, proc.stderr)
        assert proc.stderr.count("error:") == 1, (args, proc.stderr)  # one message, not N
    assert digest(ckpt) == before and digest(good / "run.h5") == run_before


def test_exception_on_one_rank_aborts_job_and_keeps_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = mdgan(4, out, "--iterations", "20", "--checkpoint-every", "4",
                 env={"MPI_GAN_FAULT": "2:9"}, timeout=120)
    assert proc.returncode != 0
    # why the job died is in the failing rank's log, written before MPI_Abort
    log = (out / "logs" / "rank2.log").read_text()
    assert "aborting the job" in log and "fault injected by MPI_GAN_FAULT at iteration 9" in log
    # and on mpiexec's stderr: the rank waits until the launcher has read it before aborting
    assert "rank 2 failed, aborting all ranks" in proc.stderr, proc.stderr
    assert "fault injected" in proc.stderr, proc.stderr
    # the checkpoint before the failure is complete and resumable
    resumed = mdgan(4, out, "--iterations", "12", "--checkpoint-every", "4", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "ckpt_00000008.h5" in resumed.stdout


ASGD_FAST = ["--dataset", "synthetic", "--synthetic-size", "400", "--eval-size", "200",
             "--eval-every", "50", "--log-every", "1000", "--seed", "2"]


def test_asgd_end_to_end_and_traffic_report(tmp_path):
    """Two asgd runs (uncompressed, AdaComp), then the analysis script's table."""
    runs = {}
    for name, compress in (("plain", "none"), ("ada", "adacomp:ratio=0.01,values=fp16")):
        out = tmp_path / name
        proc = mpirun(3, ["mpi_gan.asgd", *ASGD_FAST, "--iterations", "100", "--compress",
                          compress, "--out", str(out)], timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert "final test accuracy" in proc.stdout
        runs[name] = out / "run.h5"
    report = subprocess.run([sys.executable, "scripts/traffic_report.py", str(runs["plain"]),
                             str(runs["ada"])], capture_output=True, text=True, timeout=60,
                            cwd=REPO)
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    ada = next(line for line in lines if "adacomp" in line)
    factor = float(ada.split("x")[0].split()[-1])
    assert factor > 50  # 1% of values, fp16, compact indices
    assert "accuracy" in ada
    plain = next(line for line in lines if " none " in line)
    assert " 1.0x" in plain


def test_asgd_bad_input(tmp_path):
    cases = [(1, ["--iterations", "5"], "at least 2 MPI ranks"),
             (3, ["--compress", "adacomp:ratio=3"], "bad ratio=3"),
             (3, ["--compress", "zip"], "valid: adacomp, adacomp_bins"),
             (3, ["--lr", "-1"], "must be a positive finite number"),
             (3, ["--resume", str(tmp_path / "none")], "no such file")]
    for n, args, message in cases:
        proc = mpirun(n, ["mpi_gan.asgd", *ASGD_FAST, "--out", str(tmp_path / "x"), *args],
                      timeout=60)
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)
        assert proc.stderr.count("error:") == 1, proc.stderr
