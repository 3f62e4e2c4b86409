"""FL-GAN's configuration and command line (``python -m mpi_gan.flgan``)."""
from __future__ import annotations

from ...argtypes import nonnegative_int, positive_int
from ...config import (GanConfig, configuration, iterations_option, option, out_option, parse,
                       require_ranks, validate_gan)
from ...errors import ConfigError

PROG = "python -m mpi_gan.flgan"
DESCRIPTION = ("FL-GAN over MPI (the MD-GAN paper's federated baseline): ranks 1..N each train "
               "a full GAN on their shard, rank 0 averages G and D every round (FedAvg). "
               "Launch with mpiexec -n N+1.")


@configuration
class FlganConfig(GanConfig):
    """FL-GAN run configuration: every worker a full GAN, FedAvg every round."""

    WITHOUT = frozenset({"g_ema"})  # its G is the FedAvg of the workers'

    iterations: int = iterations_option(
        1000, "local generator updates of every worker (comparable with MD-GAN's G updates); "
              "a resumed run continues up to this number")
    out: str = out_option("runs/flgan")
    round_epochs: int = option(
        1, "training", type=positive_int,
        help="E: a FedAvg round every E local epochs of the mean shard (the paper's 1)")
    round_every: int = option(
        0, "training", type=nonnegative_int,
        help="a FedAvg round every this many iterations (0: every --round-epochs epochs)")


def parse_args(argv, quiet: bool = False) -> FlganConfig:
    """FL-GAN's command line."""
    return parse(FlganConfig, argv, PROG, DESCRIPTION, quiet)


def validate(cfg: FlganConfig, world_size: int) -> None:
    """Raise ConfigError if the FL-GAN ``cfg`` cannot run on ``world_size`` MPI ranks."""
    require_ranks(world_size, "FL-GAN")
    if cfg.g_ema:
        raise ConfigError("--g-ema: FL-GAN's generator is the FedAvg of its workers' and keeps "
                          "no average of its own; use --g-ema 0 (mdgan and standalone have it)")
    if cfg.round_epochs < 1 or cfg.round_every < 0:
        raise ConfigError(f"--round-epochs must be >= 1 and --round-every >= 0, got "
                          f"{cfg.round_epochs} and {cfg.round_every}")
    validate_gan(cfg)
