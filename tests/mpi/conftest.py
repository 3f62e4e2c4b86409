"""The MPI tier runs one pytest session per world size under mpiexec (pytest-mpi). A test's
single-process reference often runs on rank 0 alone while the other ranks wait for the
next test: they wait politely here (a non-blocking barrier, polled with sleeps), so that
the waiting ranks leave the cores to rank 0 instead of spinning in MPICH's blocking
collectives (pytest-mpi's ``mpi_tmp_path`` broadcast)."""
import time

import pytest


@pytest.fixture(autouse=True)
def ranks_leave_each_test_together():
    yield
    from mpi4py import MPI
    if MPI.COMM_WORLD.Get_size() > 1:
        request = MPI.COMM_WORLD.Ibarrier()
        while not request.Test():
            time.sleep(0.002)
