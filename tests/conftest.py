"""Shared test helpers: paths of the venv's tools, a timed mpiexec runner."""
import os
import subprocess
import sys

import h5py
import pytest

from mpi_gan.io.state import rng_state
from mpi_gan.train import Trainer

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

    class Recording(Trainer):
        def _load(self, role, values):
            Trainer._load(role, values)
            applied.update({k: v.detach().clone().numpy() for k, v in role.state() + rng_state()})
    Recording(algorithm, cfg).run()
    return applied
