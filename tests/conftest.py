"""Shared test helpers: paths of the venv's tools, a timed mpiexec runner."""
import os
import subprocess
import sys

import pytest

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
