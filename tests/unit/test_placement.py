"""mpi_gan/comm/placement.py and mpi_gan/analysis/placement.py: the fixed-size record a rank
sends to say where it runs, and how analyze groups the ranks of a run by host."""
import numpy as np

from mpi_gan.analysis.placement import ranks_table, where_lines
from mpi_gan.comm.placement import RECORD_BYTES, decode, encode, this_rank


def test_a_record_holds_the_four_fields_and_decodes_to_the_run_file_datasets():
    rows = [{"host": "h1", "pid": "101", "device": "cpu", "mpi_library": "MPICH Version: 5"},
            {"host": "h2", "pid": "202", "device": "cuda:1", "mpi_library": "Open MPI v5"},
            {"host": "x" * 1000, "pid": "7", "device": "cpu", "mpi_library": "tab\there"}]
    records = np.stack([encode(r) for r in rows])
    assert records.shape == (3, RECORD_BYTES) and records.dtype == np.uint8
    got = decode(records)
    assert list(got["ranks/pid"]) == [101, 202, 7] and got["ranks/pid"].dtype == np.int64
    assert list(got["ranks/host"][:2]) == [b"h1", b"h2"]
    assert got["ranks/host"][2] == b"x" * (RECORD_BYTES // 4 - 1)  # cut to fit the record
    assert list(got["ranks/device"]) == [b"cpu", b"cuda:1", b"cpu"]
    assert got["ranks/mpi_library"][2] == b"tab here"  # a tab would split the record
    mine = decode(encode(this_rank("cpu"))[None])
    assert mine["ranks/pid"][0] > 0 and mine["ranks/mpi_library"][0]


def test_analyze_groups_a_runs_ranks_by_host():
    ranks = decode(np.stack([encode({"host": h, "pid": str(10 + i), "device": "cpu",
                                     "mpi_library": "MPICH"})
                             for i, h in enumerate(["h1", "h1", "h2", "h2", "h1"])]))
    runs = [{"name": "md", "ranks": {k.split("/")[1]: v for k, v in ranks.items()}},
            {"name": "old", "ranks": {}}]  # a run file from before /ranks: no rows
    table = ranks_table(runs)
    assert list(table["rank"]) == [0, 1, 2, 3, 4] and list(table.pid) == [10, 11, 12, 13, 14]
    assert where_lines(table) == ["md: ranks 0-1, 4 on h1, ranks 2-3 on h2 (cpu; MPICH)"]
