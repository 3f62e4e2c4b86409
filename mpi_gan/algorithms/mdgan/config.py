"""MD-GAN's configuration and command line (``python -m mpi_gan.mdgan``)."""
from __future__ import annotations

import dataclasses

from ...argtypes import (integer, nonnegative_float, nonnegative_int, rank_factor,
                         slow_factors)
from ...config import (GanConfig, compress_option, configuration, option, out_option, parse,
                       require_ranks, validate_gan)
from ...errors import ConfigError

PROG = "python -m mpi_gan.mdgan"
DESCRIPTION = ("MD-GAN over MPI: rank 0 is the generator's server, ranks 1..N are workers "
               "with one discriminator each. Launch with mpiexec -n N+1.")


@configuration
class MdganConfig(GanConfig):
    """MD-GAN run configuration."""

    out: str = out_option("runs/mdgan")
    k: int = option(
        1, "training", type=integer,
        help="number of generated batches per iteration, 1 <= k <= workers (k=1 generates 2 "
             "so that X_g and X_d differ)")
    swap_epochs: int = option(
        1, "training", type=nonnegative_int,
        help="E: swap discriminators every E local epochs (0: never)")
    swap_adam: str = option(
        "reset", "training", choices=("reset", "travel"),
        help="on swap, 'travel': Adam state moves with D; 'reset': receiver restarts Adam")
    exchange: str = option(
        "p2p", "communication", choices=("p2p", "tree"),
        help="how generated batches and feedback travel: p2p, the paper's (the server sends "
             "X_g and X_d to every worker and gets every feedback), or tree (each batch "
             "leaves the server once and is relayed along a binomial tree over its "
             "recipients; feedback on it is summed up that tree; docs/mdgan.md)")
    compress: str = compress_option(
        "compressor of each worker's feedback F_n, NAME[:key=value,...], e.g. "
        "adacomp:ratio=0.1 with --no-residual, the setting measured best on MNIST")
    residual: bool = option(
        True, "communication",
        help="keep each worker's unsent feedback and add it to the next (error feedback; the "
             "next batch's feedback is about other samples: measured to hurt, "
             "docs/results.md)")
    staleness_bound: int = option(
        0, "training", type=nonnegative_int,
        help="S: 0 is synchronous MD-GAN (the server waits for every worker each "
             "iteration); S > 0 applies each worker's feedback as it arrives if its batch "
             "came from a G at most S versions old (older is dropped and counted), and steps "
             "G once N feedbacks are pending, or once the workers keeping pace have sent "
             "fresh ones (--staleness-batches, --staleness-quorum, --staleness-patience), "
             "so that it does not wait for its slowest worker (docs/mdgan.md)")
    staleness_scale: str = option(
        "inverse", "training", choices=("inverse", "none"),
        help="with --staleness-bound > 0, the factor of a feedback of staleness tau: "
             "'inverse' 1/max(1, tau) (AdaComp's), 'none' 1")
    staleness_lookahead: float = option(
        0.0, "training", type=nonnegative_float,
        help="with --staleness-bound > 0, L: each version's batches come from G "
             "extrapolated along its last step, theta + L (theta - theta_previous), about "
             "where G will be when their feedback comes back (0: G as it is; docs/mdgan.md)")
    staleness_quorum: int = option(
        0, "training", type=nonnegative_int,
        help="with --staleness-bound > 0, Q: G steps once Q fresh feedbacks (on its "
             "current version) are pending, or N feedbacks of any staleness; 1 <= Q <= N, "
             "or 0 (the default): with --staleness-batches fresh, G waits for the fresh "
             "feedback of every worker keeping pace (--staleness-patience), with eager "
             "Q = N (its feedback is seldom fresh: a Q < N changes little there)")
    staleness_patience: float = option(
        2.0, "training", type=nonnegative_float,
        help="with --staleness-bound > 0, fresh batches and the default quorum, P: G does "
             "not wait for a worker whose round trip (its compute and messages, a moving "
             "average the server measures) exceeds P times the median of the other "
             "workers'; a worker whose batches came from an older G is never waited for. "
             "P >= 1, or 0: G waits for N - 1 fresh feedbacks whatever the timings "
             "(docs/mdgan.md)")
    staleness_make_up: bool = option(
        False, "training",
        help="with --staleness-bound > 0, fresh batches and the default quorum: G steps on "
             "N fresh feedbacks (not on those of the workers keeping pace alone), the "
             "workers keeping pace making up for the slow ones with the version's next "
             "pairs: synchronous MD-GAN's information per update without waiting for a "
             "straggler, at two of their steps per update (docs/mdgan.md)")
    staleness_batches: str = option(
        "fresh", "training", choices=("fresh", "eager"),
        help="with --staleness-bound > 0, when a worker gets its next batches: 'fresh' (the "
             "default) a worker whose batches came from G's current version waits for G's "
             "next step, so that its feedback is fresh, and one that fell behind (a "
             "straggler) gets the current version's at once; 'eager' as soon as the server "
             "takes its feedback (it computes while G steps, so its feedback comes back "
             "about one version stale: faster, worse per update; docs/mdgan.md)")
    slow: str = option(
        "", "runtime", type=rank_factor, resumable=True, repeat=True,
        help="RANK:FACTOR: worker RANK takes FACTOR times its measured compute time per "
             "step (it sleeps the rest), a straggler for experiments and tests; recorded in "
             "the run file (docs/mdgan.md)")
    fault_tolerant: bool = option(
        False, "communication", resumable=True,
        help="go on without a worker that dies (ULFM: Open MPI's mpiexec --with-ft ulfm); "
             "the survivors run its iteration again (docs/hpc.md)")


    @classmethod
    def from_attrs(cls, attrs):
        """As every configuration's, but a run of --staleness-bound > 0 written before
        --staleness-batches existed was eager (its default then), and one written before
        --staleness-patience with fresh batches and the default quorum stepped G on N - 1
        fresh feedbacks (patience 0)."""
        cfg = super().from_attrs(attrs)
        if cfg.staleness_bound > 0 and "staleness_batches" not in attrs:
            cfg = dataclasses.replace(cfg, staleness_batches="eager")
        if cfg.staleness_bound > 0 and "staleness_patience" not in attrs and \
                cfg.staleness_batches == "fresh" and not cfg.staleness_quorum:
            cfg = dataclasses.replace(cfg, staleness_patience=0.0)
        return cfg


def parse_args(argv, quiet: bool = False) -> MdganConfig:
    """MD-GAN's command line."""
    return parse(MdganConfig, argv, PROG, DESCRIPTION, quiet)


def validate(cfg: MdganConfig, world_size: int) -> None:
    """Raise ConfigError if the MD-GAN ``cfg`` cannot run on ``world_size`` MPI ranks."""
    workers = require_ranks(world_size, "MD-GAN")
    if not 1 <= cfg.k <= workers:
        raise ConfigError(f"--k must satisfy 1 <= k <= number of workers ({workers}), got {cfg.k}")
    if cfg.swap_epochs < 0:
        raise ConfigError(f"--swap-epochs must be >= 0, got {cfg.swap_epochs}")
    if cfg.exchange == "tree" and cfg.compress != "none":
        raise ConfigError(f"--exchange tree sums the feedback on its way up the tree and "
                          f"needs --compress none, got --compress {cfg.compress!r}")
    if cfg.exchange == "tree" and cfg.fault_tolerant:
        raise ConfigError("--exchange tree does not survive a dead relay: use --exchange "
                          "p2p with --fault-tolerant")
    try:
        slow = slow_factors(cfg.slow)
    except ValueError as exc:
        raise ConfigError(f"--slow: {exc}") from None
    beyond = sorted(rank for rank in slow if rank > workers)
    if beyond:
        raise ConfigError(f"--slow names rank {beyond[0]}, but the workers are ranks 1..{workers}")
    if cfg.staleness_bound > 0 and cfg.exchange != "p2p":
        raise ConfigError("--staleness-bound > 0 sends each worker its batches when it is "
                          f"ready for them: it needs --exchange p2p, got --exchange "
                          f"{cfg.exchange}")
    if cfg.staleness_bound > 0 and cfg.k != 1:
        raise ConfigError(f"--staleness-bound > 0 generates one pair of batches per version, "
                          f"as --k 1 does: leave --k out (got --k {cfg.k})")
    if cfg.staleness_bound == 0 and cfg.staleness_lookahead:
        raise ConfigError("--staleness-lookahead predicts where G will be when a stale "
                          "feedback comes back: it needs --staleness-bound > 0")
    if cfg.staleness_bound == 0 and (cfg.staleness_quorum or cfg.staleness_batches != "fresh"):
        raise ConfigError("--staleness-quorum and --staleness-batches set how the "
                          "asynchronous server steps G: they need --staleness-bound > 0")
    if cfg.staleness_patience != MdganConfig.staleness_patience and (
            cfg.staleness_bound == 0 or cfg.staleness_quorum or
            cfg.staleness_batches != "fresh"):
        raise ConfigError("--staleness-patience sets whom G waits for with --staleness-bound "
                          "> 0, fresh batches and the default quorum: leave it out here")
    if cfg.staleness_make_up and (cfg.staleness_bound == 0 or cfg.staleness_quorum or
                                  cfg.staleness_batches != "fresh" or
                                  not cfg.staleness_patience):
        raise ConfigError("--staleness-make-up has the workers keeping pace make up for the "
                          "slow ones (those --staleness-patience names): it needs "
                          "--staleness-bound > 0, fresh batches, the default quorum and "
                          "--staleness-patience > 0")
    if 0 < cfg.staleness_patience < 1:
        raise ConfigError(f"--staleness-patience must be >= 1 (or 0: G waits for N - 1 "
                          f"fresh feedbacks), got {cfg.staleness_patience}")
    if cfg.staleness_quorum > workers:
        raise ConfigError(f"--staleness-quorum must satisfy 1 <= Q <= number of workers "
                          f"({workers}) or be 0 (the default), got {cfg.staleness_quorum}")
    if cfg.staleness_bound > 0 and cfg.fault_tolerant:
        raise ConfigError("--staleness-bound > 0 does not go on without a dead worker yet: "
                          "drop --fault-tolerant")
    if cfg.fault_tolerant:
        _require_ulfm()
    validate_gan(cfg)


def _require_ulfm() -> None:
    from mpi4py import MPI  # here only: reading a configuration must not start MPI

    from ...comm.ulfm import HOW_TO_LAUNCH, ulfm_enabled
    if not ulfm_enabled():
        library = MPI.Get_library_version().splitlines()[0].strip()
        raise ConfigError(f"--fault-tolerant needs an MPI that survives a dead rank, "
                          f"{HOW_TO_LAUNCH}; this is {library}")
