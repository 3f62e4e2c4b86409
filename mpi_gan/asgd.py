"""``mpiexec -n N+1 python -m mpi_gan.asgd``: asynchronous SGD with AdaComp (see
mpi_gan.algorithms.asgd)."""
import sys

from .thread_pools import limit_threads

if __name__ == "__main__":
    limit_threads()  # before torch starts its pools
    from .preflight import preflight
    preflight("asgd")  # a bad command line ends every rank before torch is imported
from .algorithms.asgd.main import ASGD, main, run_asgd, worker_template  # noqa: F401 - public entry

if __name__ == "__main__":
    sys.exit(main())
