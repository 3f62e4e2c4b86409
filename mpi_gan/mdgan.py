"""``mpiexec -n N+1 python -m mpi_gan.mdgan``: MD-GAN (see mpi_gan.algorithms.mdgan)."""
import sys

from .thread_pools import limit_threads

if __name__ == "__main__":
    limit_threads()  # before torch starts its pools
    from .preflight import preflight
    preflight("mdgan")  # a bad command line ends every rank before torch is imported
from .algorithms.mdgan.main import MDGAN, main, run, worker_template  # noqa: F401 - public entry

if __name__ == "__main__":
    sys.exit(main())
