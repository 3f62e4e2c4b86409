"""The standalone GAN's configuration and command line (``python -m mpi_gan.standalone``):
the options every GAN run shares, nothing more."""
from __future__ import annotations

from ...config import GanConfig, parse, validate_gan
from ...errors import ConfigError

PROG = "python -m mpi_gan.standalone"
DESCRIPTION = ("A standalone GAN in one process (no mpiexec needed): the same datasets, "
               "models, losses and files as MD-GAN and FL-GAN, on the whole training set "
               "(--split, which shares the data out among workers, stays iid).")
StandaloneConfig = GanConfig


def parse_args(argv, quiet: bool = False) -> GanConfig:
    """The standalone GAN's command line."""
    return parse(StandaloneConfig, argv, PROG, DESCRIPTION, quiet)


def validate(cfg: GanConfig, world_size: int) -> None:
    """Raise ConfigError unless ``cfg`` can run as one process."""
    if world_size != 1:
        raise ConfigError(f"the standalone GAN runs in one process, got {world_size} MPI ranks: "
                          "run it without mpiexec (or with -n 1)")
    if cfg.split != "iid":
        raise ConfigError(f"--split {cfg.split}: the standalone GAN trains on the whole "
                          "training set, it has no workers to share it among; --split applies "
                          "to MD-GAN and FL-GAN")
    validate_gan(cfg)
