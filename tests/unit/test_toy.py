"""The toy mixtures (ring, grid), their mode-coverage scores and their command-line defaults.
Expected values are computed here from the definitions, not by the project's functions."""
import math

import numpy as np
import pytest
import torch

from mpi_gan.algorithms.mdgan.config import MdganConfig, parse_args as parse_config, validate
from mpi_gan.errors import ConfigError
from mpi_gan.data import open_dataset, plan_data, spec_of
from mpi_gan.data.toy import mixture, toy_points
from mpi_gan.metrics.modes import mode_histogram, mode_scores
from mpi_gan.models import make_discriminator, make_generator


def test_ring_and_grid_centres_and_spread():
    ring, grid = mixture("ring"), mixture("grid")
    assert ring.modes == 8 and ring.std == 0.02
    assert np.allclose(np.linalg.norm(ring.centres, axis=1), 2.0)
    angles = np.sort(np.mod(np.arctan2(ring.centres[:, 1], ring.centres[:, 0]), 2 * np.pi))
    assert np.allclose(np.diff(angles), 2 * np.pi / 8)
    assert grid.modes == 25 and grid.std == 0.05
    expected = {(float(i), float(j)) for i in (-4, -2, 0, 2, 4) for j in (-4, -2, 0, 2, 4)}
    assert {tuple(c) for c in grid.centres.tolist()} == expected
    points, modes = toy_points("ring", 3, 40_000, "train")
    assert points.shape == (40_000, 2) and points.dtype == np.float32
    offsets = points - ring.centres[modes]
    assert abs(offsets.std() - 0.02) < 0.001 and abs(offsets.mean()) < 0.001
    counts = np.bincount(modes, minlength=8)
    assert counts.min() > 0.9 * 5000 and counts.max() < 1.1 * 5000  # uniform over modes
    again, _ = toy_points("ring", 3, 40_000, "train")
    assert np.array_equal(points, again)
    assert not np.array_equal(points, toy_points("ring", 4, 40_000, "train")[0])


def test_mode_scores_by_hand():
    ring = mixture("ring")
    c, std = ring.centres, ring.std
    # 100 points on every centre: all modes, all high quality, uniform histogram
    assert mode_scores(np.repeat(c, 100, axis=0), c, std) == {
        "modes": 8.0, "high_quality": 1.0, "mode_kl": pytest.approx(0.0, abs=1e-12)}
    # everything on one centre: one mode, KL = log 8
    one = mode_scores(np.repeat(c[:1], 50, axis=0), c, std)
    assert one == {"modes": 1.0, "high_quality": 1.0, "mode_kl": pytest.approx(math.log(8))}
    # 3 std is the edge: 2.9 std away counts, 3.1 std away does not
    near = c[2] + np.array([2.9 * std, 0.0])
    far = c[2] + np.array([0.0, 3.1 * std])
    assert mode_histogram(np.stack([near, far]), c, std).tolist() == [0, 0, 1, 0, 0, 0, 0, 0]
    # the origin is far from every centre: no high-quality point, KL = log K by definition
    assert mode_scores(np.zeros((10, 2)), c, std) == {
        "modes": 0.0, "high_quality": 0.0, "mode_kl": pytest.approx(math.log(8))}
    # a mode is covered at 1% of ALL points: 2 of 200 counts, 1 of 200 does not
    points = np.concatenate([np.repeat(c[:1], 197, axis=0), np.repeat(c[1:2], 2, axis=0),
                             c[2:3]])
    s = mode_scores(points, c, std)
    assert s["modes"] == 2.0 and s["high_quality"] == 1.0
    p = np.array([197, 2, 1]) / 200
    assert s["mode_kl"] == pytest.approx(float(np.sum(p * np.log(8 * p))))
    # half the points off the ring: high quality 0.5
    half = np.concatenate([np.repeat(c, 10, axis=0), np.full((80, 2), 10.0)])
    s = mode_scores(half, c, std)
    assert s["high_quality"] == 0.5 and s["modes"] == 8.0
    # the histogram is over the high-quality points only: uniform, KL 0
    assert s["mode_kl"] == pytest.approx(0.0, abs=1e-12)


def test_real_ring_points_reach_the_ceiling():
    """Real samples: every mode, and the share within 3 std of a 2-D Gaussian,
    1 - exp(-9/2) = 0.9889."""
    for name in ("ring", "grid"):
        mix = mixture(name)
        points, _ = toy_points(name, 0, 20_000, "test")
        s = mode_scores(points, mix.centres, mix.std)
        assert s["modes"] == mix.modes
        assert abs(s["high_quality"] - (1 - math.exp(-4.5))) < 0.005
        assert s["mode_kl"] < 0.01


def test_toy_dataset_shards_and_models():
    cfg = MdganConfig(dataset="ring", acgan=False, batch_size=10)
    spec = spec_of(cfg)
    assert spec.shape == (2,) and spec.classes == 0 and not spec.is_image
    data = open_dataset(cfg)
    assert data.spec == spec
    shard = plan_data(cfg, 4, 2).shard
    assert shard.images.shape == (spec.train_size // 4, 2)
    assert shard.images.dtype == torch.float32
    assert shard.images.abs().max() > 1.5  # plane units, not scaled to [-1, 1]
    g = make_generator("mlp", 16, 0, spec.shape)
    d = make_discriminator("mlp", 1, 0, 1, spec.shape)
    x = g(torch.randn(5, 16))
    assert x.shape == (5, 2) and d(x).shape == (5, 1)
    # the models' output is not squashed: a large last bias moves points anywhere
    with torch.no_grad():
        g.net[-1].bias.fill_(7.0)
    assert (g(torch.zeros(1, 16)) > 5).all()
    assert np.array_equal(spec.to_data(x.detach()), x.detach().numpy())


def test_toy_defaults_on_the_command_line():
    cfg = parse_config(["--dataset", "ring", "--lr-g", "3e-4"])
    assert cfg.acgan is False and cfg.lr_g == 3e-4 and cfg.lr_d == 1e-3
    assert cfg.iterations == 5000 and cfg.eval_samples == 2500
    assert cfg.g_ema == 0.999 and cfg.swap_adam == "travel" and cfg.latent_dim == 2
    from mpi_gan.algorithms.flgan.config import parse_args as parse_flgan_config
    fl = parse_flgan_config(["--dataset", "ring"])
    assert fl.g_ema == 0.0 and fl.lr_g == 1e-3  # FL-GAN keeps no average of G
    validate(cfg, 5)
    assert parse_config(["--dataset", "ring", "--acgan"]).acgan is True  # explicit wins
    plain = parse_config([])
    assert plain.acgan is True and plain.lr_g == 2e-4  # other datasets keep theirs
    with pytest.raises(ConfigError, match="--acgan needs class labels"):
        validate(parse_config(["--dataset", "grid", "--acgan"]), 3)
    with pytest.raises(ConfigError, match="only the mlp model"):
        validate(parse_config(["--dataset", "ring", "--model", "cnn"]), 3)
    with pytest.raises(ConfigError, match="2-D points"):
        validate(parse_config(["--dataset", "ring", "--image-size", "32"]), 3)
