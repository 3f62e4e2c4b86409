"""Traffic counters as the links used (io/traffic.py): the arithmetic against values computed
here, the file layout, and run files of the older dense layout read the same."""
import gzip
import os
import shutil

import h5py
import numpy as np
import pytest

from mpi_gan.io import integrity
from mpi_gan.io.traffic import Traffic, read, update, write
from tests.conftest import FIXTURES

KINDS = ("a", "b", "c")


def test_rows_are_merged_per_link_sorted_and_zero_links_dropped():
    t = Traffic.from_rows(KINDS, 4, [[2, 3, 0, 10, 1], [0, 1, 2, 5, 1], [2, 3, 0, 7, 2],
                                     [1, 0, 3, 0, 0]])
    assert t.rows.tolist() == [[0, 1, 2, 5, 1], [2, 3, 0, 17, 3]]
    assert t.per_kind().tolist() == [5, 0, 17] and t.per_kind("messages").tolist() == [1, 0, 3]
    assert t.total() == 22 and t.matrix("c")[3, 0] == 17 and t.matrix().sum() == 22
    assert t.matrix("c", "messages")[3, 0] == 3
    with pytest.raises(ValueError, match="outside 3 kinds and 4 ranks"):
        Traffic.from_rows(KINDS, 4, [[0, 4, 0, 1, 1]])


def test_dense_round_trip_and_addition():
    rng = np.random.default_rng(0)
    nbytes = rng.integers(0, 100, (3, 5, 5)) * (rng.random((3, 5, 5)) < 0.3)
    messages = (nbytes > 0).astype(np.int64) * 2
    t = Traffic.from_dense(KINDS, nbytes, messages)
    assert len(t.rows) == np.count_nonzero(nbytes)
    back = t.dense()
    assert np.array_equal(back[0], nbytes) and np.array_equal(back[1], messages)
    twice = (t + t).dense()
    assert np.array_equal(twice[0], 2 * nbytes) and np.array_equal(twice[1], 2 * messages)
    with pytest.raises(ValueError, match="cannot add"):
        t + Traffic.empty(("x",), 5)
    # a run resumed on fewer ranks keeps the links of the ranks it no longer has
    wider = t + Traffic.from_rows(KINDS, 7, [[1, 6, 0, 3, 1]])
    assert wider.world == 7 and wider.matrix("b")[6, 0] == 3
    assert np.array_equal(wider.dense()[0][:, :5, :5], nbytes)


def test_stored_as_links_and_updated_with_more_links(tmp_path):
    path = tmp_path / "t.h5"
    first = Traffic.from_rows(KINDS, 4, [[0, 0, 1, 8, 1]])
    more = Traffic.from_rows(KINDS, 4, [[0, 0, 1, 16, 2], [2, 3, 2, 4, 1], [1, 2, 0, 1, 1]])
    with h5py.File(path, "w") as f:
        f.attrs["world_size"] = 4
        write(f, first)
        assert read(f) == first and read(f) != more
    with h5py.File(path, "r+") as f:
        update(f, more)
    with h5py.File(path, "r") as f:
        back = read(f)
        assert np.array_equal(back.rows, more.rows) and back.kinds == KINDS
        assert f["traffic"].attrs["layout"] == "links"
        assert f["traffic/links/source"][()].tolist() == [0, 2, 3]  # sorted by kind first
        assert f["traffic/kind_bytes"][()].tolist() == [16, 1, 4]
        integrity.verify(f)  # every CRC kept by the update


def test_a_run_file_of_the_dense_layout_reads_the_same(tmp_path):
    """A run file written before the links (5a6289d's layout: dense (P, P) per kind): the
    analysis reads from it exactly the counters its dense datasets hold."""
    from mpi_gan.analysis.runs import read_run
    from mpi_gan.analysis.summary import summary_row
    path = tmp_path / "run.h5"
    with gzip.open(os.path.join(FIXTURES, "run_dense_traffic_mdgan_ring_3ranks.h5.gz")) as src, \
            open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    with h5py.File(path, "r") as f:
        assert "layout" not in f["traffic"].attrs
        kinds = str(f["traffic"].attrs["kinds"]).split(",")
        dense = {k: (f[f"traffic/kinds/{k}/bytes"][()], f[f"traffic/kinds/{k}/messages"][()])
                 for k in kinds}
    run = read_run(str(path))
    assert list(run["kinds"]) == kinds
    for kind, (nbytes, messages) in dense.items():
        assert np.array_equal(run["traffic"].matrix(kind), nbytes), kind
        assert np.array_equal(run["traffic"].matrix(kind, "messages"), messages), kind
    row = summary_row(run)
    assert row["server_bytes_sent"] == sum(b[0].sum() for b, _ in dense.values())
    assert row["bytes_feedback"] == dense["feedback"][0].sum() > 0
