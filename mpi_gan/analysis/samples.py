"""A grid of generator samples as an image (Pillow): with ACGAN, row r shows class
r % classes; greyscale or RGB. Size: (rows * H) x (cols * W) pixels."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..config import latent_classes
from ..gan.losses import latent_batch
from .runs import load_generator


def sample_grid(path: str, rows: int = 10, cols: int = 10, seed: int = 0) -> Image.Image:
    """The grid of ``rows`` x ``cols`` samples of the generator in a run file or checkpoint."""
    g, cfg = load_generator(path)
    classes, count = latent_classes(cfg), rows * cols
    z, _ = latent_batch(cfg.latent_dim, classes, count, seed, "sample-grid")
    if classes:  # one class per row
        z[:, -classes:] = torch.nn.functional.one_hot(
            torch.arange(count) // cols % classes, classes).float()
    with torch.no_grad():
        x = g(z)
    c, h, w = x.shape[1:]
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    grid = pixels.reshape(rows, cols, c, h, w).transpose(0, 3, 1, 4, 2)
    grid = np.ascontiguousarray(grid.reshape(rows * h, cols * w, c))
    return Image.fromarray(grid[:, :, 0] if c == 1 else grid)
