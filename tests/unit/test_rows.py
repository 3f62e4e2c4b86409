"""Checkpoint tables in row segments (io/rows.py): what a manifest names, what each
checkpoint writes, and the tables read back, against rows this test builds itself."""
import os
import tarfile

import h5py
import numpy as np
import pytest

from mpi_gan.algorithms.mdgan.config import MdganConfig
from mpi_gan.io import rows
from mpi_gan.io.checkpoint import (CheckpointError, checkpoint_path, prune_checkpoints,
                                   remove_stale_temporaries, resolve_resume, write_checkpoint)
from mpi_gan.io.runlog import Metrics, RunRecord
from mpi_gan.io.traffic import Traffic
from mpi_gan.algorithms.mdgan.main import MDGAN
from tests.conftest import FIXTURES

KINDS = ("a",)
read_checkpoint = MDGAN().reader


def table(workers: int) -> Metrics:
    return Metrics({"iteration": (np.int64, ()), "seconds": (np.float64, ()),
                    "d_loss": (np.float32, (workers,)), "g_loss": (np.float32, (workers,)),
                    "server_bytes_out": (np.int64, ())})


def row(i: int, workers: int, salt: float = 0.0) -> dict:
    """Row ``i``: values this test can write down again (``salt``: a rewritten row)."""
    return {"iteration": i, "seconds": i / 10 + salt,
            "d_loss": np.arange(workers, dtype=np.float32) + i + salt,
            "g_loss": -np.arange(workers, dtype=np.float32) - i, "server_bytes_out": 7 * i}


def expected(rows_: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.array([r[k] for r in rows_]) for k in rows_[0]}


class Run:
    """A run's rank 0 as far as checkpoints go: its table, record and checkpoints."""

    def __init__(self, out, workers=2):
        self.out, self.workers = str(out), workers
        self.cfg = MdganConfig(out=self.out, iterations=10 ** 6)
        self.metrics = table(workers)
        self.record = RunRecord(self.cfg, workers + 1, KINDS, {"metrics": self.metrics})
        self.count = 0

    def append(self, first: int, last: int, salt: float = 0.0) -> list[dict]:
        added = [row(i, self.workers, salt) for i in range(first, last + 1)]
        for r in added:
            self.metrics.append(**r)
        return added

    def checkpoint(self, iteration: int) -> str:
        self.count += 1
        path = checkpoint_path(self.out, iteration)
        traffic = Traffic.from_dense(KINDS, np.zeros((1, 3, 3), np.int64),
                                     np.zeros((1, 3, 3), np.int64))
        write_checkpoint(path, self.record, "mdgan", iteration,
                         f"ckpt_{iteration:08d}.{self.count:08x}", [], traffic)
        return path


def segment_sizes(path: str) -> list[int]:
    with h5py.File(path, "r") as f:
        return [s.checkpoints for s in rows.read_index(f)[0]]


def test_segments_merge_as_a_binary_counter_and_read_back_the_tables(tmp_path):
    run, written = Run(tmp_path), []
    for c in range(1, 12):
        written += run.append(10 * c - 9, 10 * c)
        path = run.checkpoint(10 * c)
        sizes = segment_sizes(path)
        assert sum(sizes) == c and sizes == sorted(sizes, reverse=True)
        assert len(sizes) == bin(c).count("1")  # 11 checkpoints: segments of 8, 2 and 1
        got = read_checkpoint(path).tables["metrics"]
        want = expected(written)
        assert got.keys() == want.keys()
        for k in want:
            assert np.array_equal(got[k], want[k].astype(got[k].dtype)), k
    # a manifest names only its own segments; the others go once no manifest names them
    prune_checkpoints(str(tmp_path), 1)
    with h5py.File(path, "r") as f:
        names = {s.name for s in rows.read_index(f)[0]}
    assert {p[:-3] for p in os.listdir(tmp_path / "checkpoints" / "rows")} == names


def test_each_checkpoint_writes_only_new_rows_and_the_manifest_holds_none(tmp_path):
    """With 64 workers, rank 0 writes the rows since the last checkpoint (a segment that
    absorbs none), and a manifest whose size does not grow with the tables."""
    run = Run(tmp_path, workers=64)
    sizes, manifests = [], []
    for c in range(1, 6):
        run.append(100 * c - 99, 100 * c)
        path = run.checkpoint(100 * c)
        manifests.append(os.path.getsize(path))
        with h5py.File(path, "r") as f:
            segment = rows.read_index(f)[0][-1]
            assert "metrics" not in f  # no table inside the manifest
        sizes.append((segment.checkpoints, segment.nbytes))
    one = [n for c, n in sizes if c == 1]  # checkpoints 1, 3 and 5: 100 new rows each
    assert len(one) == 3 and max(one) < 1.05 * min(one)
    assert 100 * 64 * 2 * 4 < one[0] < 2 * 100 * 64 * 2 * 4  # d_loss and g_loss, float32
    assert max(manifests) - min(manifests) < 200  # a few segment entries, no rows


def test_rows_rewritten_after_a_truncation_and_wider_columns(tmp_path):
    """The fault-tolerant recovery cuts a table below the last checkpoint's rows and runs
    the steps again; an elastic resume widens the per-worker columns: both read back."""
    run = Run(tmp_path)
    kept = run.append(1, 10)
    run.checkpoint(10)
    run.append(11, 15)
    run.checkpoint(15)
    run.metrics.truncate(8)
    kept = kept[:8] + run.append(9, 12, salt=0.5)  # rows 9.. again, other values
    path = run.checkpoint(12)
    got = read_checkpoint(path).tables["metrics"]
    assert np.array_equal(got["seconds"], expected(kept)["seconds"])
    assert np.array_equal(got["d_loss"], expected(kept)["d_loss"].astype(np.float32))
    kept += run.append(13, 13)
    got = read_checkpoint(run.checkpoint(13)).tables["metrics"]  # one segment of 4
    assert segment_sizes(checkpoint_path(run.out, 13)) == [4]
    # a run resumed on 3 workers: the column widens, NaN where worker 3 did not exist
    wide = table(3)
    wide.load(got)
    run.metrics, run.record.tables = wide, {"metrics": wide}
    wide.mark_stored(rows.STORE)
    d_loss = [np.append(r["d_loss"], np.nan) for r in kept]
    run.workers = 3
    d_loss += [r["d_loss"] for r in run.append(14, 14)]
    path = run.checkpoint(14)
    # the old narrow segment stays, the new one is wide: read together
    with h5py.File(path, "r") as f:
        widths = [h5py.File(rows.segment_path(str(tmp_path / "checkpoints"), s.name), "r")
                  ["metrics/d_loss"].shape[1] for s in rows.read_index(f)[0]]
    assert widths == [2, 3]
    got = read_checkpoint(path).tables["metrics"]
    assert got["d_loss"].shape == (14, 3)
    np.testing.assert_array_equal(got["d_loss"], np.array(d_loss, np.float32))


def test_a_damaged_or_missing_segment_is_refused_and_passed_over(tmp_path):
    run = Run(tmp_path)
    run.append(1, 5)
    run.checkpoint(5)
    run.append(6, 10)
    newest = run.checkpoint(10)  # absorbs 5's segment into its own
    with h5py.File(newest, "r") as f:
        [segment] = rows.read_index(f)[0]
    path = rows.segment_path(str(tmp_path / "checkpoints"), segment.name)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(path, "wb").write(bytes(data))
    with pytest.raises(CheckpointError, match=r"row segment .*ckpt_00000010.00000002.h5 does "
                       "not match the checksum in its manifest: refused"):
        read_checkpoint(newest)
    assert resolve_resume(str(tmp_path), read_checkpoint).iteration == 5
    os.unlink(path)
    with pytest.raises(CheckpointError, match="row segment .* is missing"):
        read_checkpoint(newest)
    open(path, "wb").write(b"x")
    with pytest.raises(CheckpointError, match="has 1 bytes, its manifest says"):
        read_checkpoint(newest)


def test_unnamed_segments_are_removed_at_start(tmp_path):
    """A launch killed between its segment and its manifest leaves a segment no manifest
    names; the next start removes it and keeps those named."""
    run = Run(tmp_path)
    run.append(1, 5)
    run.checkpoint(5)
    orphan = tmp_path / "checkpoints" / "rows" / "ckpt_00000010.0000abcd.h5"
    orphan.write_bytes(b"partial")
    remove_stale_temporaries(str(tmp_path))
    assert os.listdir(tmp_path / "checkpoints" / "rows") == ["ckpt_00000005.00000001.h5"]


def test_a_format_4_checkpoint_reads_its_tables_from_its_manifest(tmp_path):
    """Written by c166a64 (tests/fixtures/README.md): its tables are whole inside the
    manifest, as h5py reads them directly."""
    with tarfile.open(os.path.join(FIXTURES, "ckpt_v4_mdgan_ring_3ranks_it8.tar.gz")) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp_path / "checkpoints", **safe)
    path = str(tmp_path / "checkpoints" / "ckpt_00000008.h5")
    ckpt = read_checkpoint(path)
    assert ckpt.version == 4 and ckpt.segments == [] and ckpt.ranks() == [0, 1, 2]
    with h5py.File(path, "r") as f:
        direct = {k: f["metrics"][k][()] for k in f["metrics"]}
    assert direct.keys() == ckpt.tables["metrics"].keys() and len(direct["iteration"]) == 8
    assert all(np.array_equal(direct[k], ckpt.tables["metrics"][k]) for k in direct)
    assert all(ckpt.rank_state(r) for r in range(3))  # each shard matches its digest


def test_h5ls_lists_a_checkpoint_its_rows_and_a_rank_state_through_its_link(tmp_path):
    """HDF5's own h5ls (Debian's hdf5-tools, which .ci/run installs) reads every part:
    the manifest, a rank's state through the external link, and a row segment."""
    import shutil
    import subprocess

    import torch

    from mpi_gan.io.checkpoint import write_local_checkpoint
    h5ls = shutil.which("h5ls")
    if h5ls is None:
        pytest.skip("h5ls (Debian's hdf5-tools) is not installed")
    run = Run(tmp_path)
    run.append(1, 3)
    path = checkpoint_path(str(tmp_path), 3)
    traffic = Traffic.from_dense(KINDS, np.zeros((1, 3, 3), np.int64),
                                 np.zeros((1, 3, 3), np.int64))
    write_local_checkpoint(path, run.record, "mdgan", 3,
                           [(0, [("model/w", torch.ones(2, 3))]),
                            (1, [("model/v", torch.zeros(4))])], traffic)

    def listing(*args):
        return subprocess.run([h5ls, "-r", *args], capture_output=True, text=True, check=True,
                              cwd="/").stdout
    manifest = listing(path)
    assert "/rows/name" in manifest and "/metrics" not in manifest
    assert "/state/rank_1            External Link {ckpt_00000003.00000000/rank_1.h5//state}" \
        in manifest
    state = listing("--follow-symlinks", f"{path}/state/rank_1")
    assert "/model/v                 Dataset {4}" in state
    segment = listing(rows.segment_path(str(tmp_path / "checkpoints"), "ckpt_00000003.00000000"))
    assert "/metrics/d_loss          Dataset {3, 2}" in segment


def test_a_run_started_from_another_runs_checkpoint_names_none_of_its_segments(tmp_path):
    """Resumed in its own directory a run goes on naming the segments; started from a
    checkpoint elsewhere, it writes every row anew (its manifests name only files of
    their own directory)."""
    run = Run(tmp_path / "a")
    run.append(1, 4)
    run.checkpoint(2)
    run.append(5, 6)
    path = run.checkpoint(3)  # absorbs: then one more, which does not
    run.append(7, 8)
    path = run.checkpoint(4)
    segments = read_checkpoint(path).segments
    assert [s.checkpoints for s in segments] == [2, 1]
    assert rows.carried_over(path, segments, str(tmp_path / "a")) == segments
    assert rows.carried_over(path, segments, str(tmp_path / "a" / ".")) == segments
    assert rows.carried_over(path, segments, str(tmp_path / "b")) == []


def test_a_segment_past_the_merge_limit_is_never_rewritten(tmp_path, monkeypatch):
    """So that no checkpoint (the one a stop signal asks for included) rewrites more than
    about twice MERGE_BYTES of older rows: here every segment is past the limit."""
    monkeypatch.setattr(rows, "MERGE_BYTES", 1)
    run, written = Run(tmp_path), []
    for c in range(1, 6):
        written += run.append(3 * c - 2, 3 * c)
        path = run.checkpoint(c)
    assert segment_sizes(path) == [1, 1, 1, 1, 1]
    got = read_checkpoint(path).tables["metrics"]
    assert np.array_equal(got["iteration"], expected(written)["iteration"])
