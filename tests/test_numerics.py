"""Numbers that go bad (train/numerics.py, ``--on-nonfinite``): the checks themselves, Adam's
skipped steps, and real runs whose losses or parameters go NaN: one ``mpi_gan: error:``
line naming the iteration, the rank and the quantity, no checkpoint holding a non-finite
value, the last good checkpoint the newest."""
import math
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from mpi_gan.gan.adam import Adam
from mpi_gan.io.checkpoint import list_checkpoints
from mpi_gan.train.numerics import NonFiniteError, Watch, first_nonfinite, nonfinite_columns
from tests.conftest import MPIEXEC

PY = sys.executable
ERROR = "mpi_gan: error: "


class Log:
    def __init__(self):
        self.lines = []

    def warning(self, fmt, *args):
        self.lines.append(fmt % args)


def test_first_nonfinite_names_the_first_bad_floating_tensor_and_counts_them():
    entries = [("model/w", torch.ones(3)), ("rng/torch", torch.zeros(4, dtype=torch.uint8)),
               ("adam/0/exp_avg", torch.tensor([1.0, math.inf])),
               ("model/b", torch.tensor([math.nan]))]
    assert first_nonfinite(entries) == ("adam/0/exp_avg", 2)
    assert first_nonfinite(entries[:2]) is None


def test_nonfinite_columns_name_the_worker_of_a_per_worker_column():
    row = {"iteration": np.int64(5), "seconds": 0.1,
           "d_loss": np.array([0.5, np.nan, 0.7, -np.inf], dtype=np.float32),
           "g_loss": np.array([1.0, 1.0, 1.0, 1.0], dtype=np.float32)}
    assert nonfinite_columns(row) == [("d_loss of worker 2", 2), ("d_loss of worker 4", 4)]
    assert nonfinite_columns(row, ranked=False) == [("d_loss", 0), ("d_loss", 0)]
    assert nonfinite_columns({"loss": float("nan"), "worker": 3}) == [("loss", 0)]


def test_a_dead_workers_nan_losses_are_not_a_divergence(tmp_path):
    lost = set()
    watch = Watch("stop", str(tmp_path), 0, Log(), lost=lost)
    lost.add(2)  # --fault-tolerant: the trainer's set of dead workers, updated in place
    watch.rows(3, [("metrics", {"d_loss": np.array([0.5, np.nan, 0.4], np.float32)})])
    with pytest.raises(NonFiniteError, match="d_loss of worker 3"):
        watch.rows(4, [("metrics", {"d_loss": np.array([0.5, np.nan, np.nan], np.float32)})])


def test_stop_raises_at_the_first_bad_row_naming_iteration_rank_and_quantity(tmp_path):
    watch = Watch("stop", str(tmp_path), 0, Log())
    good = {"d_loss": np.array([0.5, 0.6], np.float32)}
    watch.rows(1, [("metrics", good)])
    with pytest.raises(NonFiniteError) as caught:
        watch.rows(2, [("metrics", {"d_loss": np.array([0.5, np.inf], np.float32)})])
    assert str(caught.value).startswith("non-finite d_loss of worker 2 (NaN or inf) on rank 2 "
                                        "at iteration 2: the run stops before saving it; no "
                                        "checkpoint was written before")
    with pytest.raises(NonFiniteError, match=r"non-finite loss in /metrics/eval \(NaN or inf\) "
                                             "on rank 0 at iteration 7"):
        watch.rows(7, [("metrics/eval", {"loss": float("nan")})])


def test_the_message_names_the_newest_checkpoint_as_the_last_good_state(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    for it in (10, 20):
        (tmp_path / "checkpoints" / f"ckpt_{it:08d}.h5").write_bytes(b"")
    watch = Watch("stop", str(tmp_path), 20, Log())
    with pytest.raises(NonFiniteError) as caught:
        watch.state(25, 3, [("model/w", torch.tensor([1.0, math.nan]))])
    assert str(caught.value) == (
        "non-finite state (model/w) (NaN or inf) on rank 3 at iteration 25: the run stops "
        f"before saving it; the newest checkpoint is {tmp_path}/checkpoints/ckpt_00000020.h5: "
        "resume from it with lower learning rates, or with --on-nonfinite skip")


def test_skip_counts_bad_rows_logs_them_and_stops_only_when_every_step_was_bad(tmp_path):
    log = Log()
    watch = Watch("skip", str(tmp_path), 0, log)
    bad = [("metrics", {"g_loss": np.array([np.nan], np.float32)})]
    for it in range(1, 11):
        watch.rows(it, bad if it in (3, 4) else [("metrics", {"g_loss": np.ones(1)})])
    watch.period(10)
    assert log.lines == ["iterations 1..10: non-finite losses, their steps skipped: g_loss of "
                         "worker 1 2x"]
    watch.period(20)  # nothing since: nothing said
    assert len(log.lines) == 1
    for it in range(21, 31):
        watch.rows(it, bad)
    with pytest.raises(NonFiniteError, match="non-finite g_loss of worker 1 .* in every row "
                                             "from iteration 21 to 30, even with "
                                             "--on-nonfinite skip: the run has diverged"):
        watch.period(30)


def test_skip_judges_divergence_on_the_rows_recorded_and_spares_loss_sums(tmp_path):
    """FL-GAN reports losses once a round: a round's bad row among good ones is skipped,
    every row bad is a divergence; its round's loss sums may hold a skipped NaN."""
    watch = Watch("skip", str(tmp_path), 0, Log())
    bad = [("metrics", {"d_loss": np.array([np.nan], np.float32)})]
    good = [("metrics", {"d_loss": np.ones(1, np.float32)})]
    for it in range(1, 21):
        watch.rows(it, bad if it == 5 else good if it == 15 else [])
    watch.period(20)
    for it in range(21, 41):
        watch.rows(it, bad if it in (25, 35) else [])
    with pytest.raises(NonFiniteError, match="in every row from iteration 21 to 40"):
        watch.period(40)
    watch.state(41, 1, [("round/losses", torch.tensor([math.nan, 1.0, 3.0]))])
    with pytest.raises(NonFiniteError, match="round/losses"):
        Watch("stop", str(tmp_path), 0, Log()).state(
            41, 1, [("round/losses", torch.tensor([math.nan, 1.0, 3.0]))])


def test_stop_names_rank_0s_own_state_when_it_is_what_went_bad(tmp_path):
    state = [("model/w", torch.ones(2))]
    watch = Watch("stop", str(tmp_path), 0, Log(), own_state=lambda: state)
    row = [("metrics", {"d_loss": np.array([np.nan, np.nan], np.float32)})]
    with pytest.raises(NonFiniteError, match="d_loss of worker 1"):
        watch.rows(3, row)
    state[0] = ("model/w", torch.tensor([math.inf, 1.0]))
    with pytest.raises(NonFiniteError, match=r"non-finite state \(model/w\) \(NaN or inf\) "
                                             "on rank 0 at iteration 4"):
        watch.rows(4, row)


def test_skip_still_stops_on_a_nonfinite_state(tmp_path):
    watch = Watch("skip", str(tmp_path), 0, Log())
    with pytest.raises(NonFiniteError, match="generator parameters"):
        watch.state(5, 0, [("w", torch.tensor([math.inf]))], "generator parameters")


def adam_pair(skip):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5))
    return p, Adam([p], lr=0.1, skip_nonfinite=skip)


def test_adam_skips_a_step_with_a_nonfinite_gradient_and_changes_nothing():
    p, opt = adam_pair(skip=True)
    p.grad = torch.ones(5)
    assert opt.step() is True
    before = p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}
    p.grad = torch.tensor([1.0, math.nan, 1.0, 1.0, 1.0])
    assert opt.step() is False and opt.skipped == 1
    assert torch.equal(p.detach(), before[0])
    assert all(torch.equal(opt.state[p][k], before[1][k]) for k in before[1])
    # without skipping, the same step spreads the NaN (what --on-nonfinite stop catches)
    q, plain = adam_pair(skip=False)
    q.grad = torch.ones(5)
    plain.step()
    q.grad = torch.tensor([1.0, math.nan, 1.0, 1.0, 1.0])
    assert plain.step() is True and torch.isnan(q.detach()[1])


def test_adam_skipping_then_a_good_step_equals_never_having_seen_the_bad_one():
    p, opt = adam_pair(skip=True)
    q, ref = adam_pair(skip=False)
    for grad in (torch.ones(5), torch.full((5,), math.inf), torch.arange(5.0)):
        p.grad = grad.clone()
        opt.step()
        if torch.isfinite(grad).all():
            q.grad = grad.clone()
            ref.step()
    assert torch.equal(p.detach(), q.detach())


# --- real runs ------------------------------------------------------------------------

def run_job(argv, env=None, timeout=300):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith(ERROR)]


def assert_checkpoints_finite(out):
    for path in list_checkpoints(str(out)):
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f":
                    assert np.isfinite(obj[()]).all(), (path, name)
            f.visititems(visit)


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


@pytest.mark.slow
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
