"""A checkpoint of format 3 (one file written by rank 0, every rank's state inside it) still
resumes on several ranks, each worker reading its own group of it, on the same world size
and elastically."""
import gzip
import os
import shutil

import h5py
import numpy as np
import pytest

from tests.conftest import FIXTURES, all_params, mpirun

FIXTURE = "ckpt_v3_mdgan_ring_3ranks_it4.h5.gz"
ARGS = ["--dataset", "ring", "--checkpoint-every", "4", "--eval-every", "0", "--log-every",
        "100", "--seed", "7", "--compress", "topk:count=8"]


def twin_in_shards(v3: str, out_dir) -> str:
    """A checkpoint of today's format (shards and a manifest) holding exactly the numbers of
    the format-3 file ``v3``: its states, tables and traffic."""
    from mpi_gan.algorithms.mdgan.main import MDGAN, mdgan_metrics
    from mpi_gan.io.checkpoint import checkpoint_path, write_local_checkpoint
    from mpi_gan.io.runlog import RunRecord
    ckpt = MDGAN().reader(v3)
    assert ckpt.version == 3 and ckpt.ranks() == [0, 1, 2]
    metrics = mdgan_metrics(ckpt.world_size - 1)
    metrics.load(ckpt.tables["metrics"])
    record = RunRecord(ckpt.config, ckpt.world_size, ckpt.kinds, {"metrics": metrics})
    path = checkpoint_path(str(out_dir), ckpt.iteration)
    write_local_checkpoint(path, record, "mdgan", ckpt.iteration,
                           [(r, list(ckpt.rank_state(r).items())) for r in ckpt.ranks()],
                           ckpt.traffic)
    return path


@pytest.mark.timeout(600)
@pytest.mark.parametrize("ranks", [4])
def test_a_format_3_checkpoint_resumes_as_its_twin_in_shards(tmp_path, ranks):
    """Written by f6c2f5d (tests/fixtures/README.md) on 3 ranks; resumed on 4 (workers 1
    and 2 read their whole state from their groups of the file, worker 3, new, copies one
    of them: both paths of the single file), it ends exactly as its twin in today's format
    does."""
    v3 = tmp_path / "v3" / "checkpoints" / "ckpt_00000004.h5"
    v3.parent.mkdir(parents=True)
    with gzip.open(os.path.join(FIXTURES, FIXTURE)) as src, open(v3, "wb") as dst:
        shutil.copyfileobj(src, dst)
    with h5py.File(v3, "r") as f:
        assert int(f.attrs["format_version"]) == 3 and "shards" not in f
    twin = twin_in_shards(str(v3), tmp_path / "twin")
    from mpi_gan.algorithms.mdgan.main import MDGAN
    finals, tables = {}, {}
    for name, source in (("from-v3", v3), ("from-twin", twin)):
        out = tmp_path / name
        proc = mpirun(ranks, ["mpi_gan.mdgan", *ARGS, "--iterations", "8", "--resume",
                              str(source), "--out", str(out), "--cache-dir",
                              str(tmp_path / "cache")])
        assert proc.returncode == 0, proc.stderr
        assert f"resumed from {source} at iteration 4" in proc.stdout
        final = out / "checkpoints" / "ckpt_00000008.h5"
        finals[name] = all_params(final)
        # the tables, rows 1-4 from the fixture and 5-8 from this run, all in its segments
        tables[name] = MDGAN().reader(str(final)).tables["metrics"]
        assert list(tables[name]["iteration"]) == list(range(1, 9))
    assert all(np.array_equal(tables["from-v3"][k], tables["from-twin"][k], equal_nan=True)
               for k in tables["from-v3"] if k != "seconds")
    a, b = finals["from-v3"], finals["from-twin"]
    assert a.keys() == b.keys() and len({k.split("/")[0] for k in a}) == ranks
    assert [k for k in a if not np.array_equal(a[k], b[k])] == []
