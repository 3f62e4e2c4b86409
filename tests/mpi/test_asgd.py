"""MPI tests (pytest-mpi) of asynchronous parameter-server SGD with compression."""
import h5py
import numpy as np
import pytest
import torch

from mpi_gan.io.runlog import read_traffic
from mpi_gan.algorithms.asgd.protocol import ALL_KINDS as KINDS
from mpi_gan.algorithms.asgd.reference import replay
from mpi_gan.algorithms.asgd.traffic_model import expected_traffic
from mpi_gan.asgd import ASGD, run_asgd, worker_template
from mpi_gan.algorithms.asgd.config import AsgdConfig
from mpi_gan.data import holdout_indices, open_dataset
from mpi_gan.models import evaluate
from mpi_gan.io.checkpoint import list_checkpoints
from mpi_gan.io.integrity import read
from tests.conftest import datasets_in, restored_state


pytestmark = pytest.mark.mpi(min_size=2)

# (compressor, --validation): the first holds out 100 of the 600 training samples
SPECS = [("adacomp:ratio=0.01", 100), ("none", 0), ("adacomp_bins:bin_size=64,values=sign", 0)]


def small(out, **changes):
    base = dict(dataset="synthetic", synthetic_size=600, iterations=240, batch_size=10,
                eval_every=120, eval_size=200, checkpoint_every=100, log_every=1000,
                out=str(out), seed=3)
    base.update(changes)
    return AsgdConfig(**base)


def shard_rows(shard):
    """The uint8 pixels of every sample of a shard, as bytes (to compare samples)."""
    pixels = torch.round((shard.images + 1) * 127.5).to(torch.uint8).numpy()
    return {row.tobytes() for row in pixels.reshape(len(pixels), -1)}


@pytest.mark.parametrize("spec,validation", SPECS)
def test_asgd_counters_and_staleness_replay(mpi_tmp_path, spec, validation):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    world, rank = comm.Get_size(), comm.Get_rank()
    # with --residual, checkpoints (every 100 pushes) quiesce the workers first
    cfg = small(mpi_tmp_path / spec.split(":")[0], compress=spec,
                residual=spec.startswith("adacomp:"), validation=validation)
    result = run_asgd(cfg)
    pushed = comm.gather(getattr(result.role, "pushed_bytes", 0), root=0)  # test bookkeeping
    # the samples each worker trained on (test bookkeeping)
    trained = comm.gather(shard_rows(result.role.shard) if rank else set(), root=0)
    if rank != 0:
        return
    check_evaluations(cfg, result, world, trained)
    with h5py.File(result.run_file, "r") as f:
        push_bytes = read_traffic(f).matrix("push")
        push_msgs = read_traffic(f).matrix("push", "messages")
        log = {k: f[f"metrics/{k}"][()] for k in ("worker", "t_pull", "sent", "tau_max",
                                                  "tau_sum", "bytes", "push")}
        accuracy = f["metrics/eval/accuracy"][()]
        pull = read_traffic(f).matrix("pull")
        # workers write shards (and report them) at checkpoints only if they have state
        # (--residual, adacomp_bins's own residual, randomk's call counter)
        state = read_traffic(f).matrix("checkpoint")
        has_state = bool(worker_template(cfg))
        assert (state[1:, 0] > 0).all() if has_state else state.sum() == 0
        # every counter equals the analytic model, given who pushed how often
        with h5py.File(result.checkpoint, "r") as ckpt:
            push_counts = ckpt["state/rank_0/server/push_counts"][()]
        theta = result.role.theta.numel()
        report = 4 * 8 if has_state else 0  # the shard's rank, size and 16-byte digest
        requests = 3 if has_state else 0  # checkpoints at >= 100, >= 200 and 240
        exp_bytes, exp_msgs = expected_traffic(push_counts, theta, requests, report,
                                               np.array([0] + pushed[1:]))
        for i, kind in enumerate(KINDS):
            assert np.array_equal(read_traffic(f).matrix(kind), exp_bytes[i]), kind
            assert np.array_equal(read_traffic(f).matrix(kind, "messages"), exp_msgs[i]), kind
    # counters: every byte each worker pushed (payloads + 8-byte version header)
    for w in range(1, world):
        assert push_bytes[w, 0] == pushed[w], (w, push_bytes[w, 0], pushed[w])
        assert push_bytes[w, 1:].sum() == 0
    applied = log["bytes"]
    assert len(applied) == cfg.iterations and log["push"].tolist() == list(range(1, 241))
    # pushes in flight when the target is reached are counted, not applied (at most N - 1)
    assert cfg.iterations <= push_msgs.sum() <= cfg.iterations + world - 2
    assert applied.sum() <= push_bytes.sum()
    assert (pull[0, 1:] > 0).all() and pull[1:, :].sum() == 0
    # staleness and parameters equal a single-process replay of the same push order
    ref = replay(cfg, world, log["worker"], log["t_pull"])
    for key in ("sent", "tau_max", "tau_sum"):
        assert np.array_equal(ref[key], log[key]), key
    assert torch.allclose(result.role.theta, ref["theta"], rtol=0, atol=1e-6)
    with h5py.File(result.run_file, "r") as f:  # the published model is that theta
        model = result.role.model_with_theta()
        for key, value in model.state_dict().items():
            assert np.array_equal(read(f[f"model/model/{key}"]), value.numpy()), key
    if world > 2:  # real asynchrony: some pushes were computed on stale models
        assert log["tau_max"].max() > 0
    else:  # one worker: every push on the newest theta, the same schedule every time
        assert accuracy[-1] > 0.5  # it learns the synthetic classes
    # with several workers what it learns depends on the arrival order, which timing
    # decides: a worker starved of CPU on a loaded machine makes most pushes stale (once
    # 0.34 against the usual 1.0, at 4 ranks on 2 busy cores); the parameters equal the
    # replay of that order, above, whatever it was


def check_evaluations(cfg, result, world, trained):
    """Evaluations every --eval-every pushes on the held-out samples with --validation (on
    the test set without), and with --validation once more on the test set at the end; no
    held-out sample in any worker's shard."""
    server = result.role
    dataset = open_dataset(cfg)
    test = dataset.test_set(cfg.eval_size)
    with h5py.File(result.run_file, "r") as f:
        table = {k: f[f"metrics/eval/{k}"][()] for k in ("push", "accuracy", "loss", "validation")}
        shard_sizes = f["data/shard_sizes"][()]
        held = f["data/validation_indices"][()] if "data/validation_indices" in f else None
    # the final theta (push 240; pushes in flight at the end are not applied) on each set
    model = server.model_with_theta()
    on_test = evaluate(model, test.images, test.labels)
    if not cfg.validation:
        assert held is None and server.validation is None
        assert table["push"].tolist() == [120, 240] and table["validation"].tolist() == [0, 0]
        assert shard_sizes.sum() == (600 // (world - 1)) * (world - 1)
        assert (table["accuracy"][-1], table["loss"][-1]) == on_test
        return
    assert np.array_equal(held, holdout_indices(dataset.train_labels, cfg.validation,
                                                cfg.seed)[1])
    assert shard_sizes.sum() == (500 // (world - 1)) * (world - 1)  # from the other 500
    validation = dataset.train_rows(held)
    assert torch.equal(server.validation.images, validation.images)
    # validation every 120 pushes, then the test set once, at the end
    assert table["push"].tolist() == [120, 240, 240]
    assert table["validation"].tolist() == [1, 1, 0]
    assert (table["accuracy"][1], table["loss"][1]) == evaluate(model, validation.images,
                                                                validation.labels)
    assert (table["accuracy"][2], table["loss"][2]) == on_test
    assert server.accuracy == table["accuracy"][1]
    assert server.test_accuracy == table["accuracy"][2]
    # not one held-out sample was trained on (synthetic samples are distinct)
    held_rows = shard_rows(validation)
    assert len(held_rows) == cfg.validation
    for w in range(1, world):
        assert not trained[w] & held_rows, f"worker {w} trained on validation samples"


@pytest.mark.parametrize("spec,residual,validation", [("adacomp", False, 0),
                                                     ("randomk:ratio=0.05", True, 60)])
def test_asgd_resume_continues_with_worker_state(mpi_tmp_path, spec, residual, validation):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    out = mpi_tmp_path / f"resume-{spec.split(':')[0]}"
    first = run_asgd(small(out, iterations=100, checkpoint_every=50, compress=spec,
                           residual=residual, validation=validation))
    saved = {}
    if rank == 0:
        with h5py.File(first.checkpoint, "r") as f:
            if residual:  # every worker's residual and randomk call counter, per tensor
                for n in range(1, world):
                    group = f[f"state/rank_{n}/channel"]
                    calls = group["features.0.weight/compressor/calls"][()]
                    # one call per push sent
                    assert calls[0] == f["state/rank_0/server/push_counts"][n]
                    saved[n] = group["classifier.0.weight/memory/residual"][()]
                    assert np.abs(saved[n]).sum() > 0
            else:
                assert list(f["state"]) == ["rank_0"]
    # the restored state is the state saved, on every rank (RNG included)
    ckpt_path = list_checkpoints(str(out))[-1]  # the first run's last (no pickled message)
    assert rank != 0 or ckpt_path == first.checkpoint
    applied = restored_state(ASGD(), small(out, iterations=101, checkpoint_every=50,
                                           compress=spec, residual=residual, resume=str(out),
                                           validation=validation))
    mismatched = []
    with h5py.File(ckpt_path, "r") as f:
        stored = f.get(f"state/rank_{rank}")
        names = [] if stored is None else datasets_in(stored)
        if sorted(applied) != sorted(names) or not (rank == 0 or residual or not names):
            mismatched.append(f"names {sorted(applied)} vs {names}")
        mismatched += [name for name in names if not np.array_equal(applied[name],
                                                                   stored[name][()])]
    # gathered, so a failure on a worker fails the test on every rank instead of hanging
    everywhere = comm.allgather(mismatched)
    assert not any(everywhere), everywhere
    second = run_asgd(small(out, iterations=160, checkpoint_every=50, compress=spec,
                            residual=residual, resume=str(out), validation=validation))
    if rank != 0:  # (resumed from push 101)
        return
    with h5py.File(second.run_file, "r") as f:
        pushes = f["metrics/push"][()]
        assert pushes.tolist() == list(range(1, 161)) and f.attrs["iteration"] == 160
        # (push, on validation) of every evaluation: each segment's end (100, 101, 160) on
        # the test set too with --validation; the earlier segments' rows are kept
        evals = list(zip(f["metrics/eval/push"][()].tolist(),
                         f["metrics/eval/validation"][()].tolist()))
        if validation:
            assert evals == [(100, 1), (100, 0), (101, 1), (101, 0), (120, 1), (160, 1),
                             (160, 0)]
            assert f["data/validation_indices"].shape == (validation,)
        else:
            assert evals == [(100, 0), (101, 0), (120, 0), (160, 0)]
    with h5py.File(second.checkpoint, "r") as f:
        assert f["state/rank_0/server/push_counts"][()].sum() >= 160
