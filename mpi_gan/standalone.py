"""``python -m mpi_gan.standalone``: the standalone GAN (see mpi_gan.algorithms.standalone)."""
import sys

from .thread_pools import limit_threads

if __name__ == "__main__":
    limit_threads()  # before torch starts its pools
    from .preflight import preflight
    preflight("standalone")  # a bad command line ends every rank before torch is imported
from .algorithms.standalone.main import Standalone, main, run  # noqa: F401 - public entry

if __name__ == "__main__":
    sys.exit(main())
