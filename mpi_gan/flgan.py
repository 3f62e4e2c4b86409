"""``mpiexec -n N+1 python -m mpi_gan.flgan``: FL-GAN (see mpi_gan.algorithms.flgan)."""
import sys

from .thread_pools import limit_threads

if __name__ == "__main__":
    limit_threads()  # before torch starts its pools
    from .preflight import preflight
    preflight("flgan")  # a bad command line ends every rank before torch is imported
from .algorithms.flgan.main import FLGAN, main, run  # noqa: F401 - public entry

if __name__ == "__main__":
    sys.exit(main())
