"""Numbers that go bad (train/numerics.py, ``--on-nonfinite``): the checks themselves and
Adam's skipped steps (real runs whose numbers go bad: tests/e2e/test_numerics.py)."""
import math

import numpy as np
import pytest
import torch

from mpi_gan.gan.adam import Adam
from mpi_gan.train.numerics import NonFiniteError, Watch, first_nonfinite, nonfinite_columns



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
