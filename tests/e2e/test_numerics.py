"""Real runs whose losses or parameters go NaN (``--on-nonfinite``): one ``mpi_gan: error:``
line naming the iteration, the rank and the quantity, no checkpoint holding a non-finite
value, the last good checkpoint the newest."""
import os
import subprocess
import sys

import h5py
import numpy as np

from mpi_gan.io.checkpoint import list_checkpoints
from tests.conftest import MPIEXEC, all_params

PY = sys.executable
ERROR = "mpi_gan: error: "



def run_job(argv, env=None, timeout=300):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith(ERROR)]


def assert_checkpoints_finite(out):
    """Every floating-point number of every checkpoint, its manifest's and its shards', is
    finite."""
    for path in list_checkpoints(str(out)):
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f":
                    assert np.isfinite(obj[()]).all(), (path, name)
            f.visititems(visit)
        for name, value in all_params(path).items():
            assert value.dtype.kind != "f" or np.isfinite(value).all(), (path, name)


def test_mdgan_worker_gone_nan_stops_at_its_loss_with_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = run_job([MPIEXEC, "-n", "3", PY, "-m", "mpi_gan.mdgan", "--dataset", "ring",
                    "--iterations", "60", "--checkpoint-every", "10", "--log-every", "10",
                    "--eval-every", "0", "--out", str(out)], env={"MPI_GAN_FAULT": "2:25:nan"})
    assert proc.returncode != 0
    newest = out / "checkpoints" / "ckpt_00000020.h5"
    assert error_lines(proc) == [
        f"{ERROR}non-finite d_loss of worker 2 (NaN or inf) on rank 2 at iteration 26: the run "
        f"stops before saving it; the newest checkpoint is {newest}: resume from it with lower "
        "learning rates, or with --on-nonfinite skip"], proc.stderr
    assert [os.path.basename(p) for p in list_checkpoints(str(out))] == \
        ["ckpt_00000010.h5", "ckpt_00000020.h5"]
    assert_checkpoints_finite(out)
    with h5py.File(out / "run.h5", "r") as f:  # the bad row is there, for the diagnosis
        assert f.attrs["iteration"] == 20 and f.attrs["finished"] == 0
        d_loss = f["metrics/d_loss"][()]
        assert len(d_loss) == 26 and np.isnan(d_loss[25, 1]) and np.isfinite(d_loss[:25]).all()


def test_huge_learning_rates_stop_the_standalone_gan_at_once_and_skip_sees_it_diverge(tmp_path):
    common = [PY, "-m", "mpi_gan.standalone", "--dataset", "ring", "--iterations", "100",
              "--lr-g", "1e30", "--lr-d", "1e30", "--log-every", "10", "--eval-every", "0"]
    stop = run_job(common + ["--out", str(tmp_path / "stop")])
    skip = run_job(common + ["--out", str(tmp_path / "skip"), "--on-nonfinite", "skip"])
    assert stop.returncode != 0 and skip.returncode != 0
    assert error_lines(stop) == [
        f"{ERROR}non-finite state (g/model/net.0.weight and 23 more) (NaN or inf) on rank 0 at "
        "iteration 1: the run stops before saving it; no checkpoint was written before: start "
        "again with lower learning rates, or with --on-nonfinite skip"], stop.stderr
    assert error_lines(skip) == [
        f"{ERROR}non-finite g_loss (NaN or inf) in every row from iteration 1 to 10, even with "
        "--on-nonfinite skip: the run has diverged; no checkpoint was written before: start "
        "again with lower learning rates"], skip.stderr
    assert "Traceback" not in stop.stderr + skip.stderr
    for out in ("stop", "skip"):
        assert list_checkpoints(str(tmp_path / out)) == []


def test_asgd_theta_gone_nan_and_flgan_huge_rates_stop_with_one_line(tmp_path):
    asgd = run_job([MPIEXEC, "-n", "3", PY, "-m", "mpi_gan.asgd", "--dataset", "synthetic",
                    "--synthetic-size", "400", "--iterations", "60", "--checkpoint-every", "20",
                    "--log-every", "10", "--eval-every", "30", "--eval-size", "50", "--out",
                    str(tmp_path / "asgd")], env={"MPI_GAN_FAULT": "0:25:nan"})
    assert asgd.returncode != 0
    assert [line.split(": the run stops")[0] for line in error_lines(asgd)] == [
        f"{ERROR}non-finite state (server/theta) (NaN or inf) on rank 0 at iteration 30"], \
        asgd.stderr
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path / "asgd"))] == \
        ["ckpt_00000020.h5"]
    flgan = run_job([MPIEXEC, "-n", "3", PY, "-m", "mpi_gan.flgan", "--dataset", "ring",
                     "--iterations", "50", "--lr-g", "1e30", "--lr-d", "1e30", "--log-every",
                     "10", "--eval-every", "0", "--out", str(tmp_path / "flgan")])
    assert flgan.returncode != 0
    lines = error_lines(flgan)
    assert len(lines) == 1 and "(NaN or inf) on rank" in lines[0], flgan.stderr
    assert list_checkpoints(str(tmp_path / "flgan")) == []
    # with skip: ASGD drops the bad pushes until one worker's run of them is --log-every
    # long; FL-GAN skips the bad steps (their round sums are no reason to stop) until every
    # round's row is bad
    common = ["--log-every", "10", "--on-nonfinite", "skip"]
    asgd = run_job([MPIEXEC, "-n", "3", PY, "-m", "mpi_gan.asgd", "--dataset", "synthetic",
                    "--synthetic-size", "400", "--iterations", "60", "--lr", "1e30",
                    "--eval-every", "60", "--eval-size", "50", *common, "--out",
                    str(tmp_path / "asgd-skip")])
    [line] = error_lines(asgd)
    assert line.startswith(f"{ERROR}non-finite values (NaN or inf) in the last 10 pushes of "
                           "worker "), asgd.stderr
    flgan = run_job([MPIEXEC, "-n", "3", PY, "-m", "mpi_gan.flgan", "--dataset", "ring",
                     "--iterations", "2000", "--lr-g", "1e30", "--lr-d", "1e30",
                     "--round-every", "5", "--checkpoint-every", "7", "--eval-every", "0",
                     *common, "--out",
                     str(tmp_path / "flgan-skip")])
    [line] = error_lines(flgan)
    assert " (NaN or inf) in every row from iteration 1 to 10, even with --on-nonfinite skip" \
        in line, flgan.stderr
    assert "round/losses" not in flgan.stderr


def test_skip_drops_bad_losses_but_never_checkpoints_a_nonfinite_worker_state(tmp_path):
    out = tmp_path / "run"
    proc = run_job([MPIEXEC, "-n", "3", PY, "-m", "mpi_gan.mdgan", "--dataset", "ring",
                    "--iterations", "60", "--checkpoint-every", "10", "--log-every", "10",
                    "--eval-every", "0", "--on-nonfinite", "skip", "--out", str(out)],
                   env={"MPI_GAN_FAULT": "2:25:nan"})
    assert proc.returncode != 0
    assert "iterations 21..30: non-finite losses, their steps skipped: d_loss of worker 2 5x" \
        in proc.stdout
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith(
        f"{ERROR}non-finite state (model/"), proc.stderr
    assert ") (NaN or inf) on rank 2 at iteration 30: the run stops before saving it; the " \
        f"newest checkpoint is {out / 'checkpoints' / 'ckpt_00000020.h5'}: resume" in lines[0]
    assert [os.path.basename(p) for p in list_checkpoints(str(out))] == \
        ["ckpt_00000010.h5", "ckpt_00000020.h5"]
    assert_checkpoints_finite(out)
    assert not [p for p in os.listdir(out / "checkpoints") if ".tmp-" in p]


def test_skip_stops_on_rank_0s_own_state_at_a_progress_line_and_before_scoring(tmp_path):
    """Rank 0's G gone NaN, with skip: every worker's loss is then bad (skipped); its own
    state is checked at the next progress line (MD-GAN) or before the next evaluation (the
    standalone GAN, scored every 15 iterations, progress every 100)."""
    mdgan = run_job([MPIEXEC, "-n", "3", PY, "-m", "mpi_gan.mdgan", "--dataset", "ring",
                     "--iterations", "60", "--checkpoint-every", "10", "--log-every", "10",
                     "--eval-every", "0", "--on-nonfinite", "skip", "--out",
                     str(tmp_path / "mdgan")], env={"MPI_GAN_FAULT": "0:25:nan"})
    alone = run_job([PY, "-m", "mpi_gan.standalone", "--dataset", "ring", "--iterations", "60",
                     "--log-every", "100", "--eval-every", "15", "--eval-samples", "200",
                     "--on-nonfinite", "skip", "--out", str(tmp_path / "alone")],
                    env={"MPI_GAN_FAULT": "0:12:nan"})
    for proc, what, at in ((mdgan, "state (model/", 30), (alone, "generator parameters (", 15)):
        assert proc.returncode != 0
        [line] = error_lines(proc)
        assert line.startswith(f"{ERROR}non-finite {what}"), proc.stderr
        assert f") (NaN or inf) on rank 0 at iteration {at}: the run stops" in line, line
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path / "mdgan"))] == \
        ["ckpt_00000010.h5", "ckpt_00000020.h5"]
