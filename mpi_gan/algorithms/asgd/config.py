"""Asynchronous parameter-server SGD's configuration and command line
(``python -m mpi_gan.asgd``)."""
from __future__ import annotations

from ...argtypes import nonnegative_int, positive_float, positive_int
from ...config import (DEVICES, ON_NONFINITE, DataConfig, check_compress_spec,
                       checkpoint_every_option, compress_option, configuration,
                       iterations_option, keep_checkpoints_option, log_every_option, option,
                       out_option, parse, require_choices, require_dataset, require_positive,
                       require_ranks, resume_option, seed_option, threads_option)
from ...errors import ConfigError

PROG = "python -m mpi_gan.asgd"
DESCRIPTION = ("Asynchronous parameter-server SGD with AdaComp (Hardy et al. 2017) over MPI: "
               "rank 0 holds the model and applies every push as it arrives, ranks 1..N "
               "compute compressed gradients. Launch with mpiexec -n N+1.")


@configuration
class AsgdConfig(DataConfig):
    """Asynchronous parameter-server SGD configuration (AdaComp paper's setting)."""

    iterations: int = iterations_option(
        20000, "total pushes applied by the server; a resumed run continues up to this number")
    batch_size: int = option(10, "training", type=positive_int,
                             help="samples per worker gradient")
    lr: float = option(0.1, "training", type=positive_float, help="server learning rate")
    staleness: str = option(
        "adacomp", "training", choices=("adacomp", "none"),
        help="'adacomp': theta_i -= lr g_i / max(1, tau_i), tau_i = updates to i since the "
             "worker's pull; 'none': plain asynchronous SGD step")
    compress: str = compress_option(
        "compressor of each push, NAME[:key=value,...], e.g. adacomp:ratio=0.01")
    residual: bool = option(
        True, "communication",
        help="workers keep what their compressor left unsent (and the rounding of what it "
             "sent) and add it to the next gradient (error feedback; nothing to keep with "
             "--compress none)")
    seed: int = seed_option()
    out: str = out_option("runs/asgd")
    resume: str = resume_option()
    checkpoint_every: int = checkpoint_every_option(5000, "applied pushes")
    keep_checkpoints: int = keep_checkpoints_option()
    eval_every: int = option(
        1000, "scoring", type=nonnegative_int, resumable=True,
        help="evaluate accuracy every this many applied pushes (and at the end) on the "
             "validation samples with --validation, else on the test set")
    eval_size: int = option(
        10000, "scoring", type=positive_int, resumable=True,
        help="test samples used per test evaluation (at most the whole test set)")
    validation: int = option(
        0, "data", type=nonnegative_int,
        help="hold out this many training samples (seeded, stratified per class) as a "
             "validation set: workers train on the rest, the server evaluates on them every "
             "--eval-every pushes and on the test set only once, at the end (0: no hold-out, "
             "every evaluation on the test set)")
    device: str = option(
        "auto", "runtime", choices=DEVICES, resumable=True,
        help="workers' compute device; auto: one CUDA device per local rank if any, else "
             "CPU (the server updates and evaluates theta on the CPU)")
    threads: int = threads_option()
    log_every: int = log_every_option(1000, "applied pushes")
    on_nonfinite: str = option(
        "stop", "runtime", choices=ON_NONFINITE, resumable=True,
        help="a NaN or infinite push or parameter: 'stop' the run with one line naming it "
             "(no checkpoint holds it), or 'skip' (drop) non-finite pushes (the run still "
             "stops after --log-every of them in a row, or if theta is non-finite)")


def parse_args(argv, quiet: bool = False) -> AsgdConfig:
    """The asynchronous SGD command line."""
    return parse(AsgdConfig, argv, PROG, DESCRIPTION, quiet)


def validate(cfg: AsgdConfig, world_size: int) -> None:
    """Raise ConfigError if ``cfg`` cannot run on ``world_size`` ranks."""
    require_ranks(world_size, "asynchronous SGD")
    require_positive(cfg, ("iterations", "batch_size", "synthetic_size", "keep_checkpoints",
                           "threads", "log_every", "eval_every", "eval_size", "lr"))
    require_choices(cfg)
    check_compress_spec(cfg.compress)
    spec = require_dataset(cfg)
    if spec.classes == 0:
        raise ConfigError(f"asynchronous SGD trains a classifier: {cfg.dataset} has no labels")
