"""Offline analysis of run files and checkpoints (no MPI): reading them into tables,
plots, sample grids. Entry points: ``python -m mpi_gan.analyze`` and
``python -m mpi_gan.evaluate``."""
