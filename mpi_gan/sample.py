"""Samples of a trained generator, as data or as a picture; no MPI needed.

``python -m mpi_gan.sample RUN_OR_CHECKPOINT --n N --out FILE`` loads the generator of a
run file, a run directory (its run.h5) or a checkpoint and writes N of its samples to
FILE: a .npy file holds them as float32 (N, *sample shape) in the dataset's own value
range (images (N, C, H, W) as pixel values 0..255, toy points (N, 2) as they are); a
.png file shows them: images as a grid scaled up to be legible, with ACGAN one row per
class named at its left (ceil(N / classes) samples per class, or --cols), otherwise
rows of --cols samples (default: about square); toy points as a scatter plot with the
mixture's centres marked. The same --seed gives the same samples (identical .npy bytes).

Bad input prints one ``mpi_gan.sample: error:`` line and exits with status 2; the output
file is written atomically (a temporary file beside it, renamed), never half.
"""
from __future__ import annotations

import argparse
import os
import sys

from .argtypes import HelpFormatter, OneLineParser, nonnegative_int, positive_int

PROG = "mpi_gan.sample"
EXTENSIONS = (".npy", ".png")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=f"python -m {PROG}", error_name=PROG,
                      description=__doc__.split("\n\n")[1], formatter_class=HelpFormatter)
    source = p.add_argument_group("input")
    source.add_argument("run", metavar="RUN_OR_CHECKPOINT",
                        help="a run file (run.h5), a run directory or a checkpoint of an "
                             "MD-GAN, FL-GAN or standalone run")
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="FILE",
                     help="where to write: FILE.npy (the samples as float32 data) or FILE.png "
                          "(a picture)")
    out.add_argument("--cols", type=nonnegative_int, default=0,
                     help="PNG: samples per row (0: ceil(N / classes) in a class grid, "
                          "ceil(sqrt(N)) otherwise; a class grid shows classes x cols samples)")
    out.add_argument("--scale", type=nonnegative_int, default=0,
                     help="PNG: screen pixels per sample pixel (0: the smallest that shows a "
                          "sample at least 56 pixels high, 2 for 28x28 digits)")
    sampling = p.add_argument_group("sampling")
    sampling.add_argument("--n", type=positive_int, default=100, help="number of samples")
    sampling.add_argument("--seed", type=int, default=0,
                          help="seed of the latent vectors: the same seed gives the same samples")
    sampling.add_argument("--class", dest="cls", type=nonnegative_int, metavar="C",
                          help="only samples of class C (ACGAN generators; default: every "
                               "class, one row each in a PNG)")
    return p


class UsageError(ValueError):
    """The output asked for cannot be written (an unknown extension, no such directory)."""


def _check_out(path: str) -> str:
    """``path``'s extension, after checking that it is one we write and that its directory
    exists (UsageError otherwise)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise UsageError(f"--out {path}: " + (f"unknown extension {ext!r}" if ext else
                                               "no extension") +
                         "; use .npy (the samples as data) or .png (a picture)")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"--out {path}: {directory} " + (
            "is not a directory" if os.path.exists(directory) else "does not exist"))
    if os.path.isdir(path):
        raise UsageError(f"--out {path} is a directory")
    return ext


def sample(args) -> str:
    """Write the samples ``args`` ask for; the line to print. Raises UsageError,
    RunFileError, SamplingError or OSError (the file could not be written)."""
    ext = _check_out(args.out)
    # torch and matplotlib only now: --help and usage errors answer at once
    import numpy as np

    from .analysis.runs import load_trained_generator, resolve
    from .analysis.sampling import draw, sample_figure
    from .io.atomic import DiskFullError, replacing

    path = resolve(args.run)
    g, cfg, iteration = load_trained_generator(path)
    if ext == ".npy":
        data = draw(g, cfg, args.n, args.seed, args.cls)
        what, size = f"{args.n} samples, float32 {data.shape}", data.nbytes
    else:
        fig = sample_figure(g, cfg, args.n, args.seed, args.cls, args.cols, args.scale)
        what, size = f"{int(fig.bbox.width)}x{int(fig.bbox.height)} pixels", 0
    try:
        with replacing(args.out, size) as tmp, open(tmp, "wb") as f:
            if ext == ".npy":
                np.save(f, data)
            else:
                fig.savefig(f, format="png", dpi=fig.dpi)
    except DiskFullError:
        raise  # its message names the file and the space needed
    except OSError as exc:
        raise OSError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    return f"wrote {args.out} ({what}) from {path} (the generator of iteration {iteration})"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .analysis.runs import RunFileError
    from .analysis.sampling import SamplingError
    try:
        print(sample(args))
    except (UsageError, RunFileError, SamplingError, OSError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
