"""Elastic resume (train/elastic.py): an MD-GAN run resumed on another number of workers
equals the single-process reference given the same change."""
import h5py
import numpy as np
import pytest

from tests.conftest import all_params, mpirun


@pytest.mark.timeout(600)
@pytest.mark.parametrize("before,after", [(4, 2), (2, 4)])
def test_elastic_resume_equals_the_reference_given_the_same_change(tmp_path, before, after):
    """6 iterations on ``before`` workers, a checkpoint, then 6 more on ``after`` workers
    (``--resume auto``): the data planned anew, departing discriminators dropped, new
    workers copying a drawn old worker's D and Adam state; a swap every local epoch (every
    3 iterations with 4 workers' shards of 24 samples, every 6 with 2 workers' of 48: the
    period follows the new plan), Adam travelling with D, top-k feedback with its residual. G, every D and every Adam
    state equal the reference's that makes the same change at iteration 6 (atol 1e-6), and
    the run file records the change."""
    from mpi_gan.algorithms.mdgan.config import MdganConfig
    from mpi_gan.algorithms.mdgan.reference import run_reference
    from mpi_gan.io.integrity import read
    out = tmp_path / "run"
    args = ["mpi_gan.mdgan", "--dataset", "synthetic", "--synthetic-size", "96",
            "--batch-size", "8", "--seed", "7", "--log-every", "100", "--eval-every", "0",
            "--checkpoint-every", "6", "--swap-adam", "travel", "--compress", "topk:count=50",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--resume", "auto"]
    first = mpirun(before + 1, [*args, "--iterations", "6"])
    assert first.returncode == 0, first.stderr
    second = mpirun(after + 1, [*args, "--iterations", "12"])
    assert second.returncode == 0, second.stderr
    assert (f"elastic resume at iteration 6: {before} workers in the checkpoint, {after} now"
            in second.stdout), second.stdout
    with h5py.File(out / "run.h5", "r") as f:
        cfg = MdganConfig.from_attrs(f["config"].attrs)
        assert [read(f[f"elastic/{c}"]).tolist() for c in
                ("iteration", "workers_before", "workers_after")] == [[6], [before], [after]]
        d_loss = read(f["metrics/d_loss"])
        stored_g = {k: read(v) for k, v in f["generator/model"].items()}
        assert f.attrs["world_size"] == after + 1 and f.attrs["iteration"] == 12
    # the per-worker columns are as wide as the most workers the run had: NaN where a
    # worker did not exist (before it joined, after it left)
    width = max(before, after)
    assert d_loss.shape == (12, width)
    assert np.isfinite(d_loss[:6, :before]).all() and np.isnan(d_loss[:6, before:]).all()
    assert np.isfinite(d_loss[6:, :after]).all() and np.isnan(d_loss[6:, after:]).all()
    ref_g, ref_discs, ref_opts = run_reference(cfg, before + 1, resize={6: after + 1},
                                               optimizers=True)
    for key, value in ref_g.state_dict().items():
        assert np.allclose(stored_g[key], value.numpy(), rtol=0, atol=1e-6), key
    state = all_params(out / "checkpoints" / "ckpt_00000012.h5")
    assert {k.split("/")[0] for k in state} == {f"rank_{r}" for r in range(after + 1)}
    for n, d in ref_discs.items():
        for key, value in d.state_dict().items():
            assert np.allclose(state[f"rank_{n}/model/{key}"], value.numpy(), rtol=0,
                               atol=1e-6), (n, key)
        for i, p in enumerate(d.parameters()):
            moments = ref_opts[n].state[p]
            for name in ("exp_avg", "exp_avg_sq"):
                assert np.allclose(state[f"rank_{n}/adam/{i}/{name}"], moments[name].numpy(),
                                   rtol=0, atol=1e-6), (n, i, name)


def test_an_algorithm_without_elastic_resume_refuses_another_world_size(tmp_path):
    out = tmp_path / "run"
    args = ["mpi_gan.flgan", "--dataset", "synthetic", "--synthetic-size", "96",
            "--batch-size", "8", "--log-every", "100", "--eval-every", "0",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    assert mpirun(3, [*args, "--iterations", "4"]).returncode == 0
    again = mpirun(4, [*args, "--iterations", "8", "--resume", "auto"])
    assert again.returncode == 2
    assert [line for line in again.stderr.splitlines() if line.startswith("mpi_gan: error:")] \
        == [f"mpi_gan: error: {out / 'checkpoints' / 'ckpt_00000004.h5'} was written by 3 "
            "ranks, this run has 4: resume with mpiexec -n 3 (flgan resumes only on the "
            "world size it was written with; MD-GAN also on another)"]
