"""``--fault-tolerant``'s pure parts (no MPI): the batch plan and swap partners of the
survivors, the snapshots kept for a redo, the rows of undone iterations."""
import h5py
import numpy as np
import pytest
import torch

from mpi_gan.algorithms.mdgan import plan as alg
from mpi_gan.io.runlog import Metrics, RunFile, RunRecord, read_table
from mpi_gan.io.traffic import Traffic
from mpi_gan.train.recovery import Snapshots, faults_table, truncate_after


def test_batch_plan_is_the_papers_with_everyone_and_lowers_k_for_the_survivors():
    for k in (1, 2, 3):
        batches, plan = alg.batch_plan(k, [1, 2, 3, 4])
        assert batches == alg.generated_batches(k)
        assert plan == {n: alg.batch_assignment(n, batches) for n in (1, 2, 3, 4)}
    batches, plan = alg.batch_plan(4, [1, 3])  # k = 4 > 2 survivors: lowered to 2
    assert batches == 2 and plan == {1: (1, 0), 3: (0, 1)}
    assert sorted(g for g, _ in plan.values()) == [0, 1]  # every batch is someone's X_g
    batches, plan = alg.batch_plan(3, [4])  # one survivor still gets two distinct batches
    assert batches == 2 and plan[4][0] != plan[4][1]


def test_swap_partners_are_the_derangement_and_a_derangement_of_the_survivors():
    everyone = [1, 2, 3, 4, 5]
    for swap in range(1, 6):
        dest = alg.derangement(3, swap, 5)
        for n in everyone:
            assert alg.swap_partners(3, swap, everyone, n) == (dest[n - 1],
                                                              alg.swap_source(dest, n))
        survivors = [1, 4, 5]
        sent = {n: alg.swap_partners(3, swap, survivors, n) for n in survivors}
        assert sorted(d for d, _ in sent.values()) == survivors  # a permutation of them
        assert all(d != n for n, (d, _) in sent.items())  # nobody keeps its own D
        assert all(sent[d][1] == n for n, (d, _) in sent.items())  # sources agree
    assert alg.swap_partners(3, 1, [2], 2) is None


def test_snapshots_keep_the_last_two_iterations_as_copies():
    snaps, w = Snapshots(), torch.zeros(3)
    for it in range(4):
        w.fill_(it)
        snaps.take(it, [("w", w)])
    assert 1 not in snaps and 2 in snaps and 3 in snaps
    w.fill_(99)  # the copy does not follow the tensor
    restored = snaps.restore(2)
    assert torch.equal(restored["w"], torch.full((3,), 2.0)) and 3 not in snaps
    restored["w"].fill_(7)  # nor the kept one the restored copy
    assert torch.equal(snaps.restore(2)["w"], torch.full((3,), 2.0))
    with pytest.raises(RuntimeError, match="no state kept for iteration 1"):
        snaps.restore(1)


def test_rows_of_undone_iterations_leave_the_tables_and_the_run_file(tmp_path):
    from mpi_gan.algorithms.mdgan.config import MdganConfig
    table = Metrics({"iteration": (np.int64, ()), "loss": (np.float32, (2,))})
    faults = faults_table()
    path = str(tmp_path / "run.h5")
    record = RunRecord(MdganConfig(), 3, ("a",), {"metrics": table, "faults": faults})
    run = RunFile(path, record, "test", 0, Traffic.empty(record.kinds, 3), "generator", [])
    for it in range(1, 6):
        table.append(iteration=it, loss=[it, it])
    run.append_rows()
    truncate_after(run.tables, 3)  # iteration 3 runs again: rows of G updates 4, 5 go
    faults.append(iteration=3, rank=2, detected_unix=1.0, silent_seconds=0.5,
                  recovery_seconds=0.1, workers_left=1)
    table.append(iteration=4, loss=[0, 0])
    run.append_rows()
    with h5py.File(path) as f:
        assert list(read_table(f)["iteration"]) == [1, 2, 3, 4]
        assert read_table(f)["loss"][3].tolist() == [0, 0]
        assert read_table(f, "faults")["rank"].tolist() == [2]
