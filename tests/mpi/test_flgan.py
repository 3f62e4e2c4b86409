"""MPI tests (pytest-mpi) of FL-GAN: equal to its single-process reference, traffic equal
to its analytic model, the restored state equal to the saved one."""
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from mpi_gan.io.runlog import read_traffic
from mpi_gan.algorithms.flgan.protocol import ALL_KINDS as KINDS, round_period
from mpi_gan.algorithms.flgan.reference import run_reference
from mpi_gan.algorithms.flgan.traffic_model import expected_traffic
from mpi_gan.gan.local import LocalGAN
from mpi_gan.algorithms.flgan.config import FlganConfig
from mpi_gan.config import local_settings
from mpi_gan.data import spec_of
from mpi_gan.flgan import FLGAN, run
from mpi_gan.gan.fedavg import flatten
from mpi_gan.train.loop import report_layout
from mpi_gan.io.integrity import read
from tests.conftest import datasets_in, restored_state
from tests.mpi.test_mdgan import cifar_dir

pytestmark = pytest.mark.mpi(min_size=2)

CASES = {
    "mlp-acgan": dict(model="mlp"),
    "mlp-saturating-L2-dirichlet": dict(model="mlp", acgan=False, g_loss="saturating",
                                        disc_steps=2, split="dirichlet:0.5",
                                        synthetic_size=40, round_every=3),
    "cnn-cifar10": dict(dataset="cifar10", model="cnn", latent_dim=32, round_every=3),
}


def small(out, world, **changes):
    workers = world - 1
    # shards of 24 samples, batch 8: a round (one local epoch) every 3 iterations
    base = dict(dataset="synthetic", synthetic_size=24 * workers, batch_size=8, iterations=6,
                checkpoint_every=4, seed=6, out=str(out), log_every=100, lr_g=1e-3, lr_d=1e-3,
                cache_dir=str(out) + "-cache")
    base.update(changes)
    if base["synthetic_size"] == 40:  # uneven Dirichlet shards need a larger set
        base["synthetic_size"] = 60 * workers
    if base["dataset"] == "cifar10":
        base["data_dir"] = str(cifar_dir(out.parent))
    return FlganConfig(**base)


@pytest.mark.parametrize("case", sorted(CASES))
def test_equivalence_with_single_process_reference(mpi_tmp_path, case):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    world = comm.Get_size()
    cfg = small(mpi_tmp_path / case, world, **CASES[case])
    result = run(cfg)
    mine = flatten([result.role.local.g, result.role.local.d]) if comm.Get_rank() else None
    workers_models = comm.gather(mine, root=0)  # test bookkeeping: every worker's final models
    if comm.Get_rank() != 0:
        return
    (ref_g, ref_d), ref_locals = run_reference(cfg, world)
    for (name, p), q in zip(result.role.g.state_dict().items(), ref_g.state_dict().values()):
        assert torch.allclose(p.float(), q.float(), rtol=0, atol=1e-6), f"G {name} differs"
    assert torch.allclose(flatten([result.role.d]), flatten([ref_d]), rtol=0, atol=1e-6)
    # the last iteration ends the second round: every worker holds the average
    for n in range(1, world):
        assert torch.allclose(workers_models[n], flatten([ref_g, ref_d]), rtol=0, atol=1e-6)
        assert torch.allclose(workers_models[n], flatten([ref_locals[n].g, ref_locals[n].d]),
                              rtol=0, atol=1e-6)
    with h5py.File(result.run_file, "r") as f:  # the run file holds the server's G
        for key, value in result.role.g.state_dict().items():
            assert np.array_equal(read(f[f"generator/model/{key}"]), value.numpy()), key
        assert f["metrics/iteration"][()].tolist() == [3, 6]  # one row per round
        assert f["metrics/d_loss"].shape == (2, world - 1)
    # it trained: every weight of the average moved away from the common initial G
    initial = LocalGAN(local_settings(cfg), spec_of(cfg).shape, None, 1).g
    for (name, p), q in zip(result.role.g.named_parameters(), initial.parameters()):
        assert not torch.equal(p, q), f"G {name} did not move"


def test_traffic_counters_equal_analytic_model(mpi_tmp_path):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    world = comm.Get_size()
    cfg = small(mpi_tmp_path / "traffic", world, iterations=10, checkpoint_every=4)
    result = run(cfg)
    if comm.Get_rank() != 0:
        return
    model_floats = flatten([result.role.g, result.role.d]).numel()
    report = 4 * 8 + 8 * 3  # the shard's rank, size and digest; 3 cost counters (float64)
    assert report_layout(FLGAN().worker_template(_ctx(cfg)), True).nbytes == report
    period = round_period(cfg, 24)
    assert period == 3
    exp_bytes, exp_msgs = expected_traffic(cfg, world, period, model_floats, report)
    with h5py.File(result.run_file, "r") as f:
        assert f["traffic"].attrs["kinds"] == ",".join(KINDS)
        for i, kind in enumerate(KINDS):
            assert np.array_equal(read_traffic(f).matrix(kind), exp_bytes[i]), kind
            assert np.array_equal(read_traffic(f).matrix(kind, "messages"), exp_msgs[i]), kind
        # rounds after iterations 3, 6 and 9 (not 10): (|w| + |theta|) each way
        assert read_traffic(f).matrix("upload", "messages")[1:, 0].tolist() == [3] * (world - 1)
        assert read_traffic(f).matrix("upload")[1, 0] == 3 * 4 * model_floats
        assert read_traffic(f).matrix()[1:, 1:].sum() == 0  # no worker-to-worker traffic


def _ctx(cfg):
    return SimpleNamespace(cfg=cfg, data=SimpleNamespace(spec=spec_of(cfg)))


def test_resume_restores_the_saved_state(mpi_tmp_path):
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    out = mpi_tmp_path / "resume"
    run(small(out, comm.Get_size(), iterations=5, checkpoint_every=4))
    ckpt = str(out / "checkpoints" / "ckpt_00000004.h5")
    # resuming mid-round: models, both Adam states, the round's loss sums and the RNG
    applied = restored_state(FLGAN(), small(out, comm.Get_size(), iterations=8,
                                            checkpoint_every=4, resume=ckpt,
                                            keep_checkpoints=5))
    mismatched = []
    with h5py.File(ckpt, "r") as f:
        stored = f[f"state/rank_{rank}"]
        names = datasets_in(stored)
        if sorted(names) != sorted(applied) or (rank and "round/losses" not in names):
            mismatched.append("names")
        mismatched += [n for n in names if not np.array_equal(applied[n], read(stored[n]))]
        if rank and not stored["round/losses"][()][2] == 1:  # iteration 4 of round 2
            mismatched.append("round/losses")
    everywhere = comm.allgather(mismatched)
    assert not any(everywhere), everywhere
