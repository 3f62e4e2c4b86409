"""Shared test helpers: paths of the venv's tools, timed runners (mpiexec, one process), the
small command-line settings the end-to-end tests share, readers of checkpoints."""
import hashlib
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from mpi_gan.io.checkpoint import checkpoint_iteration, list_checkpoints
from mpi_gan.io.state import rng_state
from mpi_gan.train import run_algorithm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout
FIXTURES = os.path.join(REPO, "tests", "fixtures")
PYTHON = sys.executable
MPIEXEC = os.path.join(os.path.dirname(PYTHON), "mpiexec")
if not os.path.exists(MPIEXEC):
    MPIEXEC = "mpiexec"


def mpirun(n, args, timeout=240, env=None, cwd=None):
    """Run ``mpiexec -n n python -m <args>``; returns CompletedProcess (never hangs CI)."""
    cmd = [MPIEXEC, "-n", str(n), PYTHON, "-m"] + list(args)
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=full_env, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(cmd)} hung for {timeout}s; output so far:\n{exc.stdout}\n{exc.stderr}")


def single(n, args, timeout=240):
    """``python -m <args>`` as one process, without mpiexec."""
    assert n == 1
    try:
        return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                              timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{args} hung for {timeout}s: {exc.stdout}\n{exc.stderr}")


FAST = ["--dataset", "synthetic", "--synthetic-size", "96", "--batch-size", "8",
        "--log-every", "100", "--seed", "7"]

ASGD_FAST = ["--dataset", "synthetic", "--synthetic-size", "400", "--eval-size", "200",
             "--eval-every", "50", "--log-every", "1000", "--seed", "2"]


# Python code: prepare() the dataset cache of DataConfig(**kwargs), printing what it says
# (torch-free; fill in with PREPARE.format(kwargs={...}))
PREPARE = """
import sys
from mpi_gan.config import DataConfig
from mpi_gan.data import prepare
prepare(DataConfig(**{kwargs!r}), log=lambda line: print(line, flush=True))
print("ready")
"""


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def shard_of(manifest, rank) -> str:
    """Rank ``rank``'s shard file of the checkpoint whose manifest is ``manifest``."""
    with h5py.File(manifest, "r") as f:
        directory = f["shards"].attrs["directory"]
    return os.path.join(os.path.dirname(str(manifest)), directory, f"rank_{rank}.h5")


def all_params(path):
    """Every rank's state in a checkpoint (models, Adam, RNG, compressor), by path
    (``rank_<r>/<name>``): the groups of a single-file checkpoint, or each shard's state
    through the manifest's external links."""
    with h5py.File(path, "r") as f:
        return {f"{rank}/{name}": f["state"][rank][name][()] for rank in f["state"]
                for name in datasets_in(f["state"][rank])}


def schedule_of(path):
    with h5py.File(path, "r") as f:
        return {k: f["schedule"][k][()] for k in f["schedule"]}


def assert_replayed(cfg, world, run_file, checkpoint):
    """The replay of a bounded-staleness MD-GAN run's recorded schedule equals every
    rank's model in ``checkpoint``, bit for bit (replayed on the ranks' thread count);
    returns the schedule."""
    import torch
    from mpi_gan.algorithms.mdgan.replay import replay
    schedule = schedule_of(run_file)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)  # the ranks' count: another one rounds differently
    try:
        g, average, discs = replay(cfg, world, schedule)
    finally:
        torch.set_num_threads(threads)
    params = all_params(checkpoint)

    def same(key, value):  # a checkpoint stores a 0-d buffer (a step count) as (1,)
        stored = params[key]
        return np.array_equal(stored.reshape(()) if value.dim() == 0 else stored,
                              value.numpy())
    for key, value in g.state_dict().items():
        assert same(f"rank_0/model/{key}", value), f"G {key}"
    for key, value in (average.state_dict().items() if average is not None else ()):
        assert same(f"rank_0/g_ema/model/{key}", value), key
    for n, d in discs.items():
        for key, value in d.state_dict().items():
            assert same(f"rank_{n}/model/{key}", value), f"D_{n} {key}"
    return schedule


def newest_checkpoint(run_dir) -> int:
    """The iteration of a run directory's newest checkpoint (0 if it has none)."""
    paths = list_checkpoints(str(run_dir))
    return checkpoint_iteration(paths[-1]) if paths else 0


def wait_for_checkpoint(run_dir, at_least, ended, timeout=600, poll=0.05):
    """Wait until a running job has a checkpoint at iteration ``at_least`` or later; its
    iteration. Waits for "or later", never for one file: older checkpoints are pruned
    (``--keep-checkpoints``), so a job that ran ahead of this loop has deleted the file it
    named. ``ended()`` returns None while the job runs, else why it ended (with its log):
    the wait fails at once with that text, and after ``timeout`` seconds. Looks every
    ``poll`` seconds."""
    deadline = time.monotonic() + timeout
    while (newest := newest_checkpoint(run_dir)) < at_least:
        why = ended()
        if why is not None:
            pytest.fail(f"the job ended before a checkpoint at >= {at_least}: {why}")
        if time.monotonic() > deadline:
            pytest.fail(f"no checkpoint at >= {at_least} in {run_dir} after {timeout} s "
                        f"(newest: {newest})")
        time.sleep(poll)
    return newest


@pytest.fixture
def run_mpi():
    return mpirun


def datasets_in(group):
    """Paths of every dataset below an h5py group."""
    out = []
    group.visititems(lambda name, obj: out.append(name) if isinstance(obj, h5py.Dataset) else None)
    return out


def restored_state(algorithm, cfg):
    """Run ``algorithm`` resuming under ``cfg`` and return, on every rank, the state its role
    and RNG hold right after the skeleton restored them ({} on a rank that restored nothing)."""
    applied = {}

    def restored(role):
        applied.update({k: v.detach().clone().numpy() for k, v in role.state() + rng_state()})
    run_algorithm(algorithm, cfg, restored=restored)
    return applied


@pytest.fixture
def small_filesystem(tmp_path):
    """A 60 MB tmpfs (needs root and mount rights; skipped without them)."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
