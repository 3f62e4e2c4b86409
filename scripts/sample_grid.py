"""Render a grid of generator samples from a run file or checkpoint as a PNG.

Usage: ``python scripts/sample_grid.py runs/quickstart/run.h5 samples.png [--rows 10]``

Works for the run files of MD-GAN, FL-GAN and the standalone GAN, on every
dataset (greyscale or RGB). With ACGAN, row r shows class r % classes. Reads
only HDF5 datasets (no pickle); writes the PNG with Pillow. ``python -m
mpi_gan.analyze`` draws the same grid for every run it is given.
"""
from __future__ import annotations

import argparse
import sys

from mpi_gan.analysis.samples import sample_grid


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run_file", help="run.h5 or a checkpoint file")
    parser.add_argument("png", help="output PNG path")
    parser.add_argument("--rows", type=int, default=10, help="grid rows")
    parser.add_argument("--cols", type=int, default=10, help="grid columns")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent samples")
    args = parser.parse_args(argv)
    image = sample_grid(args.run_file, args.rows, args.cols, args.seed)
    image.save(args.png)
    print(f"wrote {args.png}: {args.rows * args.cols} samples ({image.width}x{image.height} "
          f"pixels) from {args.run_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
