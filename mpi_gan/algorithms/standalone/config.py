"""The standalone GAN's configuration and command line (``python -m mpi_gan.standalone``):
the options every GAN run shares, nothing more."""
from __future__ import annotations

from ...config import GanConfig, parse, validate_gan
from ...errors import ConfigError

PROG = "python -m mpi_gan.standalone"
DESCRIPTION = ("A standalone GAN in one process (no mpiexec needed): the same datasets, "
               "models, losses and files as MD-GAN and FL-GAN, on the whole training set.")
StandaloneConfig = GanConfig


def parse_args(argv, quiet: bool = False) -> GanConfig:
    """The standalone GAN's command line."""
    return parse(StandaloneConfig, argv, PROG, DESCRIPTION, quiet)


def validate(cfg: GanConfig, world_size: int) -> None:
    """Raise ConfigError unless ``cfg`` can run as one process."""
    if world_size != 1:
        raise ConfigError(f"the standalone GAN runs in one process, got {world_size} MPI ranks: "
                          "run it without mpiexec (or with -n 1)")
    validate_gan(cfg)
