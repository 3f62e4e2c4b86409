"""--g-ema in real runs: after each G step the average is decay * average + (1 - decay) * G,
computed here by hand from G's weights in consecutive checkpoints; the run file publishes
the average (not G), and reading a checkpoint's generator gives the average too."""
import h5py
import numpy as np
import pytest
import torch

from mpi_gan.analysis.runs import load_generator
from mpi_gan.models import make_generator
from mpi_gan.io.integrity import read
from tests.conftest import datasets_in, mpirun

DECAY = 0.5
CASES = {  # ranks, module, where rank 0 keeps G in a checkpoint
    "mdgan": (3, "mpi_gan.mdgan", "state/rank_0/model"),
    "standalone": (1, "mpi_gan.standalone", "state/rank_0/g/model"),
}


def group(f, path) -> dict[str, np.ndarray]:
    return {name: read(f[path][name]) for name in datasets_in(f[path])}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_published_generator_is_the_moving_average_of_g(tmp_path, case):
    ranks, module, g_path = CASES[case]
    out = tmp_path / case
    proc = mpirun(ranks, [module, "--dataset", "ring", "--iterations", "3", "--g-ema",
                          str(DECAY), "--checkpoint-every", "1", "--keep-checkpoints", "5",
                          "--eval-every", "0", "--seed", "4", "--out", str(out)], timeout=240)
    assert proc.returncode == 0, proc.stderr
    g0 = {k: v.numpy() for k, v in make_generator("mlp", 2, 4, (2,)).state_dict().items()}
    average = dict(g0)  # the average starts as a copy of the initial G
    for t in (1, 2, 3):
        with h5py.File(out / "checkpoints" / f"ckpt_{t:08d}.h5", "r") as f:
            g, stored = group(f, g_path), group(f, "state/rank_0/g_ema/model")
        average = {k: DECAY * average[k] + (1 - DECAY) * g[k] for k in average}
        for k in average:
            np.testing.assert_allclose(stored[k], average[k], rtol=1e-6, atol=1e-7)
        assert any(not np.array_equal(stored[k], g[k]) for k in g)  # not G itself
    with h5py.File(out / "run.h5", "r") as f:
        published = group(f, "generator/model")
    assert all(np.array_equal(published[k], stored[k]) for k in stored)
    loaded, _ = load_generator(str(out / "checkpoints" / "ckpt_00000003.h5"))
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, torch.from_numpy(stored[k])), k
