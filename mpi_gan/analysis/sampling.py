"""Samples of a trained generator as data and as pictures (no MPI; matplotlib, no display).

* ``draw``: ``n`` samples (n, *shape) float32 in the dataset's own value range (pixel
  values 0..255 for images, points in the plane's units for the toy mixtures), latents
  from the stream ("latent", "sample") of a seed, optionally all of one class or one
  class per sample (ACGAN generators);
* ``image_grid``: images as rows of tiles, scaled up nearest-neighbour, each row
  optionally named at its left; ``scatter``: points with the mixture's centres marked;
* ``sample_figure``: the picture of a generator: one row per class with ACGAN (row r:
  class r), a plain grid without classes or for one class, a scatter for points.

``python -m mpi_gan.sample`` writes these to files; ``python -m mpi_gan.analyze`` draws
``grid_png`` (a compact ``sample_figure``) for every run with a generator.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.textpath import TextPath

from ..config import GanConfig, latent_classes
from ..data import spec_of
from ..data.toy import MIXTURES
from ..gan.losses import latent_batch
from ..metrics.evaluator import forward_in_chunks
from .runs import load_generator

CHUNK = 500        # samples per forward pass of G
MIN_PIXELS = 56    # automatic scale: a sample at least this many pixels high on screen
DPI = 100          # figure pixels per inch: figure sizes below are in pixels / DPI
FONT = 10          # points, row names and titles
PAD = 6            # pixels around row names and titles
SCATTER_SIZE = 7   # inches, the scatter plot of points (700 x 700 pixels)


class SamplingError(ValueError):
    """A sampling request that does not fit the generator (a class it does not have)."""


def latents(cfg: GanConfig, n: int, seed: int = 0, cls=None) -> torch.Tensor:
    """z (n, latent_dim) from ``latent_batch`` (stream "sample"); ``cls`` (an int, or one
    int per sample) replaces the one-hot class part, the last ``classes`` entries of z.
    Raises SamplingError for a class the generator does not have."""
    classes = latent_classes(cfg)
    z, _ = latent_batch(cfg.latent_dim, classes, n, seed, "sample")
    if cls is None:
        return z
    wanted = torch.as_tensor(np.broadcast_to(np.asarray(cls, dtype=np.int64), (n,)).copy())
    if not classes:
        raise SamplingError(f"class {int(wanted[0])} asked of an unconditional {cfg.dataset} "
                            f"generator: only ACGAN generators have classes")
    bad = wanted[(wanted < 0) | (wanted >= classes)]
    if len(bad):
        raise SamplingError(f"class {int(bad[0])} is out of range: the {cfg.dataset} generator "
                            f"has classes 0..{classes - 1}")
    z[:, -classes:] = torch.nn.functional.one_hot(wanted, classes).to(z.dtype)
    return z


def draw(g: torch.nn.Module, cfg: GanConfig, n: int, seed: int = 0, cls=None) -> np.ndarray:
    """``n`` samples of G (in eval mode) float32 (n, *shape) in the dataset's own value
    range (``DatasetSpec.to_data``); latents from ``latents(cfg, n, seed, cls)``, generated
    in chunks of CHUNK without gradients."""
    with one_thread():
        x = forward_in_chunks(g, latents(cfg, n, seed, cls), next(g.parameters()).device,
                              CHUNK)
    return spec_of(cfg).to_data(x.numpy())


@contextlib.contextmanager
def one_thread():
    """torch's intra-op pool at one thread for the block: how a product's sums are split
    among threads changes its rounding, so the same seed gives the same bytes whatever
    the machine's cores or the caller's thread setting (one thread, as every rank trains)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def auto_scale(height: int) -> int:
    """The smallest integer factor that shows a sample ``height`` pixels high at least
    MIN_PIXELS high (28x28 digits: 2)."""
    return max(1, math.ceil(MIN_PIXELS / height))


def _text_pixels(text: str) -> float:
    """Width of ``text`` at FONT points, in figure pixels."""
    return TextPath((0, 0), text, size=FONT).get_extents().width * DPI / 72


def image_grid(images: np.ndarray, cols: int, row_names=None, scale: int = 0, gap: int = 2,
               title: str = "") -> Figure:
    """Images (n, C, H, W) in [0, 255] (C = 1 grey, 3 RGB) as rows of ``cols`` tiles, each
    pixel shown as ``scale`` x ``scale`` figure pixels (0: ``auto_scale``), tiles and rows
    ``gap`` white pixels apart; cells past the n-th are white. ``row_names``: one name per
    row, drawn at its left (each row is an axes whose y-label is the name); ``title``
    above the grid. Without names and title the figure holds the tiles and gaps only:
    (rows * H * scale + (rows - 1) * gap) x (cols * W * scale + (cols - 1) * gap) pixels."""
    n, c, h, w = images.shape
    rows, scale = -(-n // cols), scale or auto_scale(h)
    tiles = np.full((rows * cols, c, h, w), 255, dtype=np.uint8)
    tiles[:n] = np.clip(np.round(images), 0, 255)
    tiles = tiles.transpose(0, 2, 3, 1).repeat(scale, axis=1).repeat(scale, axis=2)
    tiles = np.pad(tiles, ((0, 0), (0, 0), (0, gap), (0, 0)), constant_values=255)
    tile_h, tile_w = h * scale, w * scale + gap
    strip_w = cols * tile_w - gap
    strips = tiles.reshape(rows, cols, tile_h, tile_w, c).transpose(0, 2, 1, 3, 4)
    strips = strips.reshape(rows, tile_h, cols * tile_w, c)[:, :, :strip_w]
    left = math.ceil(max(map(_text_pixels, row_names)) + 2 * PAD) if row_names else 0
    top = math.ceil(FONT * DPI / 72 + 2 * PAD) if title else 0
    width, height = left + strip_w, top + rows * (tile_h + gap) - gap
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    for r, strip in enumerate(strips):
        ax = fig.add_axes((left / width, 1 - (top + r * (tile_h + gap) + tile_h) / height,
                           strip_w / width, tile_h / height))
        # RGB uint8 (grey repeated): drawn exactly, a colormap would round grey levels
        ax.imshow(strip.repeat(3 // c, axis=2), interpolation="none", aspect="auto")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if row_names:
            ax.set_ylabel(row_names[r], rotation=0, ha="right", va="center", fontsize=FONT,
                          labelpad=PAD * 72 / DPI)
    if title:
        fig.suptitle(title, y=1 - PAD / height, va="top", fontsize=FONT)
    return fig


def scatter(points: np.ndarray, centres: np.ndarray | None = None, title: str = "") -> Figure:
    """Points (n, 2) as a scatter plot with equal axes, ``centres`` (K, 2) marked."""
    fig = Figure(figsize=(SCATTER_SIZE, SCATTER_SIZE), dpi=DPI)
    ax = fig.add_subplot()
    ax.scatter(points[:, 0], points[:, 1], s=5, alpha=0.5, linewidths=0,
               label=f"{len(points)} samples")
    if centres is not None:
        ax.scatter(centres[:, 0], centres[:, 1], marker="x", s=80, c="red",
                   label="mixture centres")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    ax.set_title(title)
    return fig


def sample_figure(g: torch.nn.Module, cfg: GanConfig, n: int, seed: int = 0, cls=None,
                  cols: int = 0, scale: int = 0, gap: int = 2, named: bool = True) -> Figure:
    """The picture of G's samples, latents as in ``draw``:

    * points (the toy mixtures): a scatter of ``n`` points with the mixture's centres;
    * ACGAN images, ``cls`` None: one row per class (row r: class r, named at its left
      when ``named``) of ``cols`` samples each (0: ceil(n / classes));
    * other images (no classes, or all of class ``cls``, named in the title when
      ``named``): ``n`` samples in rows of ``cols`` (0: ceil(sqrt(n))).

    ``scale``, ``gap``: as in ``image_grid``."""
    spec, classes = spec_of(cfg), latent_classes(cfg)
    if not spec.is_image:
        centres = MIXTURES[spec.name].centres if spec.name in MIXTURES else None
        return scatter(draw(g, cfg, n, seed, cls), centres, f"{spec.name}: {n} samples")
    if classes and cls is None:  # a class grid
        cols = cols or -(-n // classes)
        row_cls = np.repeat(np.arange(classes), cols)
        names = list(spec.class_names) if named else None
        return image_grid(draw(g, cfg, len(row_cls), seed, row_cls), cols, names, scale, gap)
    title = ""
    if named and cls is not None:
        name = spec.class_names[cls] if 0 <= cls < classes else str(cls)
        title = f"class {cls}" + (f": {name}" if name != str(cls) else "")
    images = draw(g, cfg, n, seed, cls)
    return image_grid(images, cols or math.ceil(math.sqrt(n)), None, scale, gap, title)


def grid_png(run_path: str, grid: int, out: str) -> str:
    """``python -m mpi_gan.analyze``'s compact picture of the generator in ``run_path``
    (a run file or checkpoint), written to the PNG ``out``: ``grid`` x ``grid`` images,
    scaled up (each at least MIN_PIXELS high), a gap between them (ACGAN: one row per
    class, each row's class named at its left), or a scatter of 10 * grid^2 points for the
    toy mixtures. Returns ``out``."""
    g, cfg = load_generator(run_path)
    count = grid * grid * (1 if spec_of(cfg).is_image else 10)
    sample_figure(g, cfg, count, cols=grid).savefig(out)
    return out
