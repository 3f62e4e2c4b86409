"""Render a grid of generator samples from a run file or checkpoint as a PNG.

Usage: ``python scripts/sample_grid.py runs/quickstart/run.h5 samples.png [--rows 10]``

With ACGAN, row r shows class r % 10. Reads only HDF5 datasets (no pickle);
writes the PNG with zlib alone, so it needs no imaging library.
"""
from __future__ import annotations

import argparse
import struct
import sys
import zlib

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from mpi_gan.config import NUM_CLASSES, Config
from mpi_gan.models import make_generator


def write_png(path: str, image: np.ndarray) -> None:
    """Write a 2-D uint8 array as an 8-bit greyscale PNG."""
    height, width = image.shape
    raw = b"".join(b"\x00" + image[y].tobytes() for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(
            ">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                                  0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run_file", help="run.h5 or a checkpoint file")
    parser.add_argument("png", help="output PNG path")
    parser.add_argument("--rows", type=int, default=10, help="grid rows")
    parser.add_argument("--cols", type=int, default=10, help="grid columns")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent samples")
    args = parser.parse_args(argv)
    with h5py.File(args.run_file, "r") as f:
        cfg = Config.from_attrs(f["config"].attrs)
        state = {k: torch.from_numpy(np.array(v[()])) for k, v in f["generator/model"].items()}
    g = make_generator(cfg.model, cfg.latent_dim, cfg.seed)
    g.load_state_dict(state)
    g.eval()
    count = args.rows * args.cols
    gen = torch.Generator().manual_seed(args.seed)
    if cfg.acgan:
        labels = torch.arange(count) // args.cols % NUM_CLASSES
        z = torch.cat([torch.randn(count, cfg.latent_dim - NUM_CLASSES, generator=gen),
                       F.one_hot(labels, NUM_CLASSES).float()], dim=1)
    else:
        z = torch.randn(count, cfg.latent_dim, generator=gen)
    with torch.no_grad():
        x = g(z)[:, 0]
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    grid = pixels.reshape(args.rows, args.cols, 28, 28).transpose(0, 2, 1, 3)
    write_png(args.png, grid.reshape(args.rows * 28, args.cols * 28))
    print(f"wrote {args.png}: {count} samples of {cfg.model} G from {args.run_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
