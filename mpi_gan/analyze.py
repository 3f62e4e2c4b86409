"""``python -m mpi_gan.analyze``: tables and plots of runs (see mpi_gan.analysis.analyze)."""
import sys

from .analysis.analyze import main  # noqa: F401 - public entry

if __name__ == "__main__":
    sys.exit(main())
