"""Elastic resume (train/elastic.py): an MD-GAN run resumed on fewer, then more workers
equals the single-process reference given the same changes."""
import h5py
import numpy as np
import pytest

from tests.conftest import all_params, mpirun


@pytest.mark.timeout(600)
def test_elastic_resume_equals_the_reference_given_the_same_changes(tmp_path):
    """6 iterations on 4 workers, a checkpoint, 6 more on 2 workers, then 6 more on 4 again
    (``--resume auto`` each time): the data planned anew, departing discriminators dropped,
    new workers copying a drawn old worker's D and Adam state; a swap every local epoch
    (every 3 iterations with 4 workers' shards of 24 samples, every 6 with 2 workers' of
    48: the period follows the plan), Adam travelling with D, top-k feedback with its
    residual. G, every D and every Adam state equal the reference's that makes the same
    changes at iterations 6 and 12 (atol 1e-6), and the run file records both."""
    from mpi_gan.algorithms.mdgan.config import MdganConfig
    from mpi_gan.algorithms.mdgan.reference import run_reference
    from mpi_gan.io.integrity import read
    out = tmp_path / "run"
    args = ["mpi_gan.mdgan", "--dataset", "synthetic", "--synthetic-size", "96",
            "--batch-size", "8", "--seed", "7", "--log-every", "100", "--eval-every", "0",
            "--checkpoint-every", "6", "--swap-adam", "travel", "--compress", "topk:count=50",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--resume", "auto"]
    workers = {6: 4, 12: 2, 18: 4}  # up to iteration: workers
    previous = None
    for until, n in workers.items():
        proc = mpirun(n + 1, [*args, "--iterations", str(until)])
        assert proc.returncode == 0, proc.stderr
        if previous is not None:
            assert (f"elastic resume at iteration {until - 6}: {previous} workers in the "
                    f"checkpoint, {n} now" in proc.stdout), proc.stdout
        previous = n
    with h5py.File(out / "run.h5", "r") as f:
        cfg = MdganConfig.from_attrs(f["config"].attrs)
        assert [read(f[f"elastic/{c}"]).tolist() for c in
                ("iteration", "workers_before", "workers_after")] == [[6, 12], [4, 2], [2, 4]]
        d_loss = read(f["metrics/d_loss"])
        stored_g = {k: read(v) for k, v in f["generator/model"].items()}
        assert f.attrs["world_size"] == 5 and f.attrs["iteration"] == 18
    # the per-worker columns are as wide as the most workers the run had: NaN where a
    # worker did not take part
    assert d_loss.shape == (18, 4) and np.isfinite(d_loss[:6]).all()
    assert np.isfinite(d_loss[6:12, :2]).all() and np.isnan(d_loss[6:12, 2:]).all()
    assert np.isfinite(d_loss[12:]).all()
    ref_g, ref_discs, ref_opts = run_reference(cfg, 5, resize={6: 3, 12: 5}, optimizers=True)
    for key, value in ref_g.state_dict().items():
        assert np.allclose(stored_g[key], value.numpy(), rtol=0, atol=1e-6), key
    state = all_params(out / "checkpoints" / "ckpt_00000018.h5")
    assert {k.split("/")[0] for k in state} == {f"rank_{r}" for r in range(5)}
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
