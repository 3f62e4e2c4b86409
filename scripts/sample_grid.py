"""Render a grid of generator samples from a run file or checkpoint as a PNG.

Usage: ``python scripts/sample_grid.py runs/quickstart/run.h5 samples.png [--rows 10]``

Works for the run files of MD-GAN, FL-GAN and the standalone GAN, on every
dataset (greyscale or RGB). With ACGAN, row r shows class r % classes. Reads
only HDF5 datasets (no pickle); writes the PNG with Pillow.
"""
from __future__ import annotations

import argparse
import sys

import h5py
import numpy as np
import torch
from PIL import Image

from mpi_gan.config import GanConfig, latent_classes
from mpi_gan.data import spec_of
from mpi_gan.gan.losses import latent_batch
from mpi_gan.models import make_generator


def load_generator(path: str) -> tuple[torch.nn.Module, GanConfig]:
    """G and the run's configuration from a run file (/generator/model) or a checkpoint
    (rank 0's G: /state/rank_0/model for MD-GAN, /state/rank_0/g/model otherwise)."""
    with h5py.File(path, "r") as f:
        cfg = GanConfig.from_attrs(f["config"].attrs)
        group = next(f[p] for p in ("generator/model", "state/rank_0/g/model",
                                    "state/rank_0/model") if p in f)
        state = {k: torch.from_numpy(np.array(v[()])) for k, v in group.items()}
    g = make_generator(cfg.model, cfg.latent_dim, cfg.seed, spec_of(cfg).shape)
    g.load_state_dict(state)
    return g.eval(), cfg


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run_file", help="run.h5 or a checkpoint file")
    parser.add_argument("png", help="output PNG path")
    parser.add_argument("--rows", type=int, default=10, help="grid rows")
    parser.add_argument("--cols", type=int, default=10, help="grid columns")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent samples")
    args = parser.parse_args(argv)
    g, cfg = load_generator(args.run_file)
    classes, count = latent_classes(cfg), args.rows * args.cols
    z, _ = latent_batch(cfg.latent_dim, classes, count, args.seed, "sample-grid")
    if classes:  # one class per row
        z[:, -classes:] = torch.nn.functional.one_hot(
            torch.arange(count) // args.cols % classes, classes).float()
    with torch.no_grad():
        x = g(z)
    c, h, w = x.shape[1:]
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    grid = pixels.reshape(args.rows, args.cols, c, h, w).transpose(0, 3, 1, 4, 2)
    grid = grid.reshape(args.rows * h, args.cols * w, c)
    Image.fromarray(grid[:, :, 0] if c == 1 else grid).save(args.png)
    print(f"wrote {args.png}: {count} samples of {cfg.model} G ({c}x{h}x{w}) from {args.run_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
