"""``python -m mpi_gan.evaluate``: scores of run files and checkpoints (see
mpi_gan.analysis.evaluate)."""
import sys

from .analysis.evaluate import main  # noqa: F401 - public entry

if __name__ == "__main__":
    sys.exit(main())
